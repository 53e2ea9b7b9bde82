import Foundation

/// `sluiced`'s settings, resolved from four sources in order of precedence: command-line flag, environment
/// variable `SLUICE_<NAME>`, config file line `name = value`, built-in default.
struct Settings {
    /// Every setting: its name (flag `--name`, env `SLUICE_NAME` with dashes as underscores, file key
    /// `name`), its default and what it means.
    static let known: [(name: String, defaultValue: String?, help: String)] = [
        ("listen", "127.0.0.1:7878", "ingest listener address (port 0 = any free port)"),
        ("http", "127.0.0.1:7879", "HTTP address for /status and /metrics (\"off\" = none)"),
        ("database-url", nil, "libpq URL of PostgreSQL; absent = an embedded cluster under the state directory"),
        ("state-dir", "./sluice-state", "where the embedded PostgreSQL cluster and the default token file live"),
        ("writers", "2", "writer threads, one PostgreSQL connection each"),
        ("token-file", nil, "token file (default <state-dir>/tokens); no tokens = loopback clients only"),
        ("pipeline", nil, "batches validated at once (default: core count)"),
        ("max-connections", "10000", "sessions (authenticated connections) at once"),
        ("max-unauthenticated", "1024", "connections still in their handshake at once (separate from max-connections)"),
        ("max-unauthenticated-per-address", "64", "connections still in their handshake from one source address"),
        ("handshake-timeout", "5", "seconds a connection has to send SLU1 and Hello and be authenticated"),
        ("http-max-connections", "64", "HTTP (/status, /metrics) connections open at once"),
        ("http-idle-timeout", "10", "seconds an idle HTTP connection stays open"),
        ("drain-timeout", "20", "seconds SIGTERM waits for the last acks before closing connections"),
        ("log-level", "info", "trace, debug, info, notice, warning, error or critical"),
        ("log-format", "text", "text (one line per event) or json (one object per line, for journald/Loki)"),
        ("tls-cert", nil, "PEM certificate chain: TLS on the ingest listener (needs tls-key); absent = plain TCP"),
        ("tls-key", nil, "PEM private key of tls-cert (unencrypted)"),
    ]

    private var values: [String: String] = [:]
    private var origins: [String: String] = [:]

    /// - Parameters:
    ///   - flags: values given on the command line (absent = not given).
    ///   - environment: the process environment.
    ///   - configFile: path of a `key = value` file, if any.
    init(flags: [String: String?], environment: [String: String], configFile: String?) throws {
        if let configFile {
            let text: String
            do {
                text = try String(contentsOfFile: configFile, encoding: .utf8)
            } catch {
                throw SettingsError("cannot read config file \(configFile): \(error.localizedDescription)")
            }
            for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
                guard let eq = line.firstIndex(of: "=") else {
                    throw SettingsError("\(configFile):\(number + 1): expected \"name = value\", got \"\(raw)\"")
                }
                let key = line[..<eq].trimmingCharacters(in: .whitespaces)
                var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                guard Self.known.contains(where: { $0.name == key }) else {
                    throw SettingsError(
                        "\(configFile):\(number + 1): unknown setting \"\(key)\"; known: \(Self.known.map(\.name).joined(separator: ", "))")
                }
                values[key] = value
                origins[key] = "\(configFile):\(number + 1)"
            }
        }
        for (name, _, _) in Self.known {
            let env = Self.environmentName(name)
            if let value = environment[env], !value.isEmpty {
                values[name] = value
                origins[name] = "$\(env)"
            }
            if let flag = flags[name], let value = flag {
                values[name] = value
                origins[name] = "--\(name)"
            }
        }
    }

    static func environmentName(_ name: String) -> String {
        "SLUICE_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The resolved value, or the default.
    subscript(name: String) -> String? {
        values[name] ?? Self.known.first { $0.name == name }?.defaultValue
    }

    /// Where a value came from, for error messages ("--writers", "$SLUICE_WRITERS", "sluiced.conf:3").
    func origin(_ name: String) -> String { origins[name] ?? "default" }

    func int(_ name: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text = self[name] else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw SettingsError("\(name) = \"\(text)\" (from \(origin(name))) is not a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    func double(_ name: String) throws -> Double? {
        guard let text = self[name] else { return nil }
        guard let x = Double(text), x >= 0 else {
            throw SettingsError("\(name) = \"\(text)\" (from \(origin(name))) is not a non-negative number of seconds")
        }
        return x
    }

    /// `host:port`, e.g. `127.0.0.1:7878` or `[::1]:7878`.
    func address(_ name: String) throws -> (host: String, port: Int)? {
        guard let text = self[name] else { return nil }
        if text == "off" { return nil }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw SettingsError("\(name) = \"\(text)\" (from \(origin(name))) is not host:port, e.g. 127.0.0.1:7878")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}

struct SettingsError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension Settings {
    /// The effective configuration, one `name = value  # origin` line per setting, with the password of
    /// `database-url` masked: what `sluiced --check-config` prints.
    func effectiveConfiguration() -> String {
        Self.known.map { entry in
            let value = self[entry.name].map { entry.name == "database-url" ? Self.maskPassword($0) : $0 }
            let shown = value ?? "(unset: \(entry.help))"
            return "\(entry.name) = \(shown)  # \(origin(entry.name))"
        }.joined(separator: "\n")
    }

    /// `postgresql://user:secret@host/db` → `postgresql://user:*****@host/db`; also `password=…` keywords.
    static func maskPassword(_ url: String) -> String {
        var masked = url
        if let scheme = masked.range(of: "://"), let at = masked[scheme.upperBound...].firstIndex(of: "@") {
            let credentials = masked[scheme.upperBound..<at]
            if let colon = credentials.firstIndex(of: ":") {
                masked.replaceSubrange(masked.index(after: colon)..<at, with: "*****")
            }
        }
        if let range = masked.range(of: #"password=[^ &]*"#, options: .regularExpression) {
            masked.replaceSubrange(range, with: "password=*****")
        }
        return masked
    }
}
