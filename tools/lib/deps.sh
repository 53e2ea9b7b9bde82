# Sourced by tools/test, tools/run and tools/bench: installs the Debian packages sluice needs, once.
# shellcheck shell=bash

SLUICE_DEBIAN_PACKAGES=(pkg-config libzstd-dev libpq-dev libprotobuf-c-dev protobuf-c-compiler postgresql gcc-multilib libmbedtls-dev
  postgresql-contrib valgrind make gcc cmake systemd openssl ca-certificates prometheus)

sluice_install_deps() {
  local missing=()
  for p in "${SLUICE_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "sluice: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v swift >/dev/null || [ -x /opt/swift/usr/bin/swift ] || {
    echo "sluice: swift not found: install Swift 6.1 or newer (https://swift.org/install)" >&2; return 1; }
  command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
}

# The directory holding initdb, pg_ctl and postgres of the newest installed PostgreSQL.
sluice_pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] || { echo "sluice: PostgreSQL server binaries not found" >&2; return 1; }
  echo "$dir"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
sluice_free_port() {
  python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}
