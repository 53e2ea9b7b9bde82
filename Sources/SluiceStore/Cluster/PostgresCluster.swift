import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A PostgreSQL cluster of its own under a data directory: the daemon's embedded default, and what tests
/// that restart the database use.
///
/// Private: no TCP at all (`listen_addresses = ''`, and `pg_hba.conf` rejects every TCP connection), only a
/// Unix socket (mode 0700) in a directory of mode 0700 owned by the cluster's user — the data directory
/// itself, or for a data directory too long for a socket path a `/tmp/sluice-pg.*` directory checked for
/// owner and mode. So the cluster's user and root can connect (user `sluice`, trust over that socket) and
/// nobody else on the machine can. Clusters made by earlier versions (trust on 127.0.0.1) get the new
/// `pg_hba.conf` at their next start, and one still running with the old one is restarted.
///
/// Every blocking step (initdb, pg_ctl and their waits) runs on a thread of its own, never on the
/// cooperative pool.
public final class PostgresCluster: Sendable {
    /// How `pg_ctl stop` ends the server (see `pg_ctl -m`).
    public enum StopMode: String, Sendable {
        /// Waits for clients to disconnect.
        case smart
        /// Disconnects clients, checkpoints and stops cleanly.
        case fast
        /// Kills the server at once; the next start runs crash recovery (committed data survives).
        case immediate
    }

    /// The cluster's data directory (created, and owned by the run-as user, on first start).
    public let dataDirectory: String
    /// The port number, which names the Unix socket (`.s.PGSQL.<port>`); nothing listens on TCP.
    public let port: Int
    /// The directory holding the Unix socket (mode 0700, owned by the cluster's user).
    public let socketDirectory: String
    private let binDirectory: String?
    /// The user to run initdb/pg_ctl as via `runuser`; nil = the current user.
    private let switchToUser: String?
    private let logger: Logger

    /// - Parameters:
    ///   - port: nil picks a free port now (kept across restarts).
    ///   - binDirectory: nil uses the newest `/usr/lib/postgresql/*/bin`.
    ///   - runAsUser: nil means `postgres` when running as root (PostgreSQL refuses root), else the current user.
    public init(
        dataDirectory: String, port: Int?, binDirectory: String? = nil, runAsUser: String? = nil, logger: Logger
    ) {
        self.dataDirectory = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        self.port = port ?? Self.freePort()
        self.binDirectory = binDirectory ?? Self.newestBinDirectory()
        let current = Self.passwordEntry(uid: geteuid())?.name
        let wanted = runAsUser ?? (geteuid() == 0 ? "postgres" : current)
        switchToUser = wanted == current ? nil : wanted
        socketDirectory = Self.socketDirectory(for: self.dataDirectory, user: wanted)
        self.logger = logger
    }

    /// libpq URL of database `postgres` as user `sluice` over the Unix socket (the host is the socket
    /// directory, percent-encoded).
    public var url: String {
        let host = socketDirectory.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? socketDirectory
        return "postgresql://sluice@\(host):\(port)/postgres"
    }

    /// `psql` arguments that reach this cluster (database `postgres` as user `sluice`).
    public var psqlArguments: [String] {
        ["-h", socketDirectory, "-p", "\(port)", "-U", "sluice", "-d", "postgres"]
    }

    /// `pg_hba.conf` as this version writes it: the Unix socket only (its directory's mode is the access
    /// control), every TCP connection rejected.
    static let hostBasedAuthentication = """
        # Written by sluiced at every start: connections only over the Unix socket, whose directory (mode 0700)
        # only the cluster's user and root can enter. No TCP: listen_addresses is empty, and any host line is
        # rejected should it be turned on. Edits here are overwritten; use --database-url for a shared server.
        local   all   all   trust
        host    all   all   all   reject
        hostssl all   all   all   reject

        """

    private static let unreserved = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    /// The server log (what `start` quotes when the server does not come up).
    public var logFile: String { dataDirectory + "/server.log" }

    /// Creates the cluster on first start (initdb), then starts the server and waits until it accepts
    /// connections. Does nothing if it is already running.
    public func start() async throws {
        try await OwnThread.run(name: "sluice-postgres-start") { try self.startBlocking() }
    }

    /// Stops the server and waits until it is gone. Does nothing if it is not running.
    public func stop(mode: StopMode = .fast) async throws {
        try await OwnThread.run(name: "sluice-postgres-stop") { try self.stopBlocking(mode: mode) }
    }

    /// Stops the server with `mode`, then starts it again on the same port.
    public func restart(mode: StopMode) async throws {
        try await OwnThread.run(name: "sluice-postgres-restart") {
            try self.stopBlocking(mode: mode)
            try self.startBlocking()
        }
    }

    // MARK: - Blocking steps (on an owned thread)

    private func startBlocking() throws {
        let bin = try tools()
        if !FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            try prepareDataDirectory()
            logger.info("creating PostgreSQL cluster", metadata: ["data_directory": "\(dataDirectory)"])
            let result = try run(
                bin + "/initdb",
                [
                    "-D", dataDirectory, "-U", "sluice", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8",
                    "--no-locale",
                ])
            guard result.status == 0 else {
                throw StoreError.cluster(
                    "initdb failed for \(dataDirectory) (exit \(result.status)): \(Self.tail(result.output, lines: 15))")
            }
        }
        // Older versions wrote trust for 127.0.0.1: replace it, and restart a server still running with it.
        let migrated = try writeHostBasedAuthentication()
        if try isRunning(bin) {
            guard migrated else { return }
            logger.notice(
                "restarting the embedded PostgreSQL without TCP access (it was started by an older sluiced)",
                metadata: ["data_directory": "\(dataDirectory)"])
            try stopBlocking(mode: .fast)
        }
        try prepareSocketDirectory()
        // Sized for streaming COPY rather than PostgreSQL's tiny defaults: WAL buffers that hold a few groups,
        // WAL segments kept for reuse instead of created (and zero-filled) mid-stream, checkpoints spaced out.
        // Durability is untouched (fsync and synchronous_commit stay on).
        let tuning = "-c shared_buffers=256MB -c wal_buffers=16MB -c min_wal_size=1GB -c max_wal_size=4GB"
        let access = "-c listen_addresses='' -c unix_socket_permissions=0700 -p \(port) -k '\(socketDirectory)'"
        let options = "\(access) \(tuning)"
        let result = try run(
            bin + "/pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "120", "-o", options, "start"])
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            throw StoreError.cluster(
                "PostgreSQL did not start (pg_ctl exit \(result.status)): \(Self.tail(result.output, lines: 5)); "
                    + "server log \(logFile) ends with: \(Self.tail(log, lines: 15))")
        }
        logger.info(
            "PostgreSQL started",
            metadata: ["socket_directory": "\(socketDirectory)", "port": "\(port)", "data_directory": "\(dataDirectory)"])
    }

    /// Writes `pg_hba.conf` unless it already says what this version wants; true if it changed. Keeps the
    /// file's owner (the cluster's user) and mode 0600.
    private func writeHostBasedAuthentication() throws -> Bool {
        let path = dataDirectory + "/pg_hba.conf"
        if (try? String(contentsOfFile: path, encoding: .utf8)) == Self.hostBasedAuthentication { return false }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError.cluster("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(Self.hostBasedAuthentication.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw StoreError.cluster("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        fchmod(fd, 0o600)
        let owner = try clusterOwner()
        _ = fchown(fd, owner.uid, owner.gid)
        return true
    }

    /// The socket directory must be private: the data directory (0700, checked by PostgreSQL itself) or a
    /// directory of our own under /tmp, which is created 0700 for the cluster's user and refused if someone
    /// else made it (or loosened it) first.
    private func prepareSocketDirectory() throws {
        guard socketDirectory != dataDirectory else { return }
        let owner = try clusterOwner()
        if mkdir(socketDirectory, 0o700) == 0 {
            if owner.uid != geteuid() { _ = chown(socketDirectory, owner.uid, owner.gid) }
        } else if errno != EEXIST {
            throw StoreError.cluster("cannot create the socket directory \(socketDirectory): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard lstat(socketDirectory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == owner.uid,
            info.st_mode & 0o777 == 0o700
        else {
            throw StoreError.cluster(
                "the socket directory \(socketDirectory) is not a directory of mode 0700 owned by \(owner.name): "
                    + "remove it, or use a shorter state directory (the socket then lives in the data directory)")
        }
    }

    private func clusterOwner() throws -> (name: String, uid: uid_t, gid: gid_t) {
        if let user = switchToUser {
            guard let entry = Self.passwordEntry(name: user) else {
                throw StoreError.cluster("user \(user), who must own the PostgreSQL cluster, does not exist")
            }
            return entry
        }
        return Self.passwordEntry(uid: geteuid()) ?? ("uid \(geteuid())", geteuid(), getegid())
    }

    private func stopBlocking(mode: StopMode) throws {
        let bin = try tools()
        guard try isRunning(bin) else { return }
        let result = try run(bin + "/pg_ctl", ["-D", dataDirectory, "-m", mode.rawValue, "-w", "-t", "120", "stop"])
        guard result.status == 0 else {
            throw StoreError.cluster(
                "pg_ctl stop -m \(mode.rawValue) failed (exit \(result.status)): \(Self.tail(result.output, lines: 10))")
        }
        logger.info("PostgreSQL stopped", metadata: ["mode": "\(mode.rawValue)"])
    }

    private func isRunning(_ bin: String) throws -> Bool {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") else { return false }
        return try run(bin + "/pg_ctl", ["-D", dataDirectory, "status"]).status == 0
    }

    private func tools() throws -> String {
        guard let binDirectory, FileManager.default.isExecutableFile(atPath: binDirectory + "/initdb"),
            FileManager.default.isExecutableFile(atPath: binDirectory + "/pg_ctl")
        else {
            throw StoreError.cluster(
                "PostgreSQL server programs (initdb, pg_ctl) not found in \(binDirectory ?? "/usr/lib/postgresql/*/bin"): "
                    + "install the postgresql package or pass the directory holding them")
        }
        return binDirectory
    }

    /// Creates the data directory (mode 0700) and, when running as root, hands it to the run-as user.
    private func prepareDataDirectory() throws {
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw StoreError.cluster("cannot create PostgreSQL data directory \(dataDirectory): \(error)")
        }
        chmod(dataDirectory, 0o700)
        if let user = switchToUser {
            guard let entry = Self.passwordEntry(name: user) else {
                throw StoreError.cluster("user \(user), who must own the PostgreSQL cluster, does not exist")
            }
            guard chown(dataDirectory, entry.uid, entry.gid) == 0 else {
                throw StoreError.cluster(
                    "cannot give \(dataDirectory) to \(user): \(String(cString: strerror(errno)))")
            }
            // A data directory under, say, /root is owned by the user but unreachable for them: say so plainly
            // rather than through initdb's "Permission denied".
            if try run("/usr/bin/test", ["-w", dataDirectory]).status != 0 {
                throw StoreError.cluster(
                    "PostgreSQL runs as user \(user), who cannot reach \(dataDirectory): make its parent "
                        + "directories traversable (chmod o+x) or put the data directory elsewhere")
            }
        }
    }

    /// Runs `program` (as the run-as user when that differs from us), waits for it, and returns its exit
    /// status and output (stdout and stderr together).
    ///
    /// posix_spawn + waitpid rather than Foundation's `Process`, whose exit detection can miss a child when
    /// several run at once; this thread is ours to block. The output goes to a temporary file, not a pipe,
    /// because the server pg_ctl starts could otherwise inherit the pipe and keep it open.
    private func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        // Through sh so the program starts in "/": the run-as user may not be allowed into our directory.
        var argv = ["/bin/sh", "-c", #"cd / && exec "$0" "$@""#, program] + arguments
        if let user = switchToUser {
            guard let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            }) else {
                throw StoreError.cluster("runuser not found: cannot run \(program) as \(user)")
            }
            argv = [runuser, "-u", user, "--"] + argv
        }
        var template = Array((NSTemporaryDirectory() + "sluice-pgctl-XXXXXX").utf8CString)
        let outputFD = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard outputFD >= 0 else { throw StoreError.cluster("cannot create a temporary file for \(program)'s output") }
        let outputPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer {
            close(outputFD)
            unlink(outputPath)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)

        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else {
            throw StoreError.cluster("cannot run \(argv[0]): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw StoreError.cluster("waiting for \(program) failed: \(String(cString: strerror(errno)))") }
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS, which Swift does not import as macros.
        let exitStatus = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return (exitStatus, output)
    }

    // MARK: - Helpers

    /// A user's name and ids, via the reentrant getpw*_r (getpwnam/getpwuid share a static buffer that
    /// concurrent callers corrupt).
    static func passwordEntry(name: String? = nil, uid: uid_t? = nil) -> (name: String, uid: uid_t, gid: gid_t)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var scratch = [CChar](repeating: 0, count: 16_384)
        // The entry's strings point into `scratch`, so they are read before the closure returns.
        return scratch.withUnsafeMutableBufferPointer { buffer -> (name: String, uid: uid_t, gid: gid_t)? in
            let status =
                if let name {
                    getpwnam_r(name, &entry, buffer.baseAddress!, buffer.count, &result)
                } else {
                    getpwuid_r(uid ?? geteuid(), &entry, buffer.baseAddress!, buffer.count, &result)
                }
            guard status == 0, result != nil else { return nil }
            return (String(cString: entry.pw_name), entry.pw_uid, entry.pw_gid)
        }
    }

    /// Where the socket of a cluster in `dataDirectory` lives: the data directory itself when the socket's path
    /// (`<dir>/.s.PGSQL.<port>`) fits in sun_path (107 bytes), else `/tmp/sluice-pg.<user>.<hash of the path>`.
    static func socketDirectory(for dataDirectory: String, user: String?) -> String {
        if dataDirectory.utf8.count + 20 < 107 { return dataDirectory }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a: stable across runs, unlike Hasher
        for byte in dataDirectory.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "/tmp/sluice-pg.\(user ?? "\(geteuid())").\(String(hash, radix: 16))"
    }

    static func tail(_ text: String, lines: Int) -> String {
        let kept = text.split(whereSeparator: \.isNewline).suffix(lines).joined(separator: " | ")
        return kept.isEmpty ? "(no output)" : kept
    }

    static func newestBinDirectory() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return versions.compactMap { version -> (Double, String)? in
            guard let number = Double(version), FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/initdb")
            else { return nil }
            return (number, "\(root)/\(version)/bin")
        }.max { $0.0 < $1.0 }?.1
    }

    /// A port nothing listens on right now on 127.0.0.1 (the kernel's pick for port 0).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return 54_321 }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : 54_321
    }
}
