import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import SluiceCore
import SluiceServer
import SluiceStore
import UnixSignals

/// Settings every `sluiced` command understands (where the state and the tokens are).
struct LocationOptions: ParsableArguments {
    @Option(name: .long, help: "Config file of \"name = value\" lines (or $SLUICE_CONFIG).")
    var config: String?

    @Option(name: .long, help: "Embedded PostgreSQL and default token file live here. Default: ./sluice-state")
    var stateDir: String?

    @Option(name: .long, help: "Token file. Default: <state-dir>/tokens")
    var tokenFile: String?

    func settings(extra flags: [String: String?] = [:]) throws -> Settings {
        var all = flags
        all["state-dir"] = stateDir
        all["token-file"] = tokenFile
        let environment = ProcessInfo.processInfo.environment
        return try Settings(flags: all, environment: environment, configFile: config ?? environment["SLUICE_CONFIG"])
    }

    static func tokenPath(_ settings: Settings) -> String {
        settings["token-file"] ?? ((settings["state-dir"] ?? "./sluice-state") + "/tokens")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the ingest server (the default command).",
        discussion: """
            Each option also comes from the environment as SLUICE_<NAME> (SLUICE_DATABASE_URL, SLUICE_WRITERS, \
            ...) and from the --config file as "name = value" (database-url = postgresql://...). A flag beats \
            the environment, which beats the file. When ready, sluiced prints "sluiced: listening on HOST:PORT".

            Examples:
              sluiced serve --listen 127.0.0.1:0 --http off     # any free port, no HTTP
              SLUICE_DATABASE_URL=postgresql://sluice@db/tel sluiced serve --writers 4
              sluiced serve --state-dir /var/lib/sluice --log-level debug
              sluiced serve --listen 0.0.0.0:7878 --tls-cert server.pem --tls-key server.key

            TLS: with --tls-cert and --tls-key (both, or neither) the ingest listener speaks only TLS; clients \
            connect with `sluice send --tls` (a certificate from a public CA) or `--tls-ca ca.pem` (a private CA). \
            SIGHUP re-reads both files (a renewed certificate): new connections get it, open ones keep theirs, and \
            a bad file keeps the current certificate (logged as an error). \
            /status and /metrics stay plain HTTP. libsluice speaks plain TCP: put a TLS terminator such as \
            stunnel in front of it.
            """)

    @OptionGroup var location: LocationOptions

    @Option(help: "Ingest listener, host:port; port 0 picks a free one. Default: 127.0.0.1:7878")
    var listen: String?

    @Option(help: "HTTP listener for /status and /metrics, host:port or \"off\". Default: 127.0.0.1:7879")
    var http: String?

    @Option(help: "libpq URL of PostgreSQL. Absent: an embedded cluster under --state-dir.")
    var databaseURL: String?

    @Option(help: "Writer threads (PostgreSQL connections). Default: 2")
    var writers: String?

    @Option(help: "Batches validated and enriched at once. Default: the core count")
    var pipeline: String?

    @Option(help: "Sessions (authenticated connections) at once. Default: 10000")
    var maxConnections: String?

    @Option(help: "Connections still in their handshake at once, separate from --max-connections. Default: 1024")
    var maxUnauthenticated: String?

    @Option(help: "Connections still in their handshake from one source address. Default: 64")
    var maxUnauthenticatedPerAddress: String?

    @Option(help: "Seconds a connection has to send SLU1 and Hello and be authenticated. Default: 5")
    var handshakeTimeout: String?

    @Option(help: "HTTP (/status, /metrics) connections open at once. Default: 64")
    var httpMaxConnections: String?

    @Option(help: "Seconds an idle HTTP connection stays open. Default: 10")
    var httpIdleTimeout: String?

    @Option(help: "Seconds a drain (SIGTERM) may take in all: last acks and commits. Past it, sluiced exits 75 naming the readings left unacknowledged. Default: 20")
    var drainTimeout: String?

    @Option(help: "trace, debug, info, notice, warning, error, critical (SIGHUP reloads it). Default: info")
    var logLevel: String?

    @Option(help: "text, or json for one JSON object per line (journald, Loki). Default: text")
    var logFormat: String?

    @Option(help: "PEM certificate chain (server certificate first): the ingest listener speaks TLS. Needs --tls-key.")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert, unencrypted. Needs --tls-cert.")
    var tlsKey: String?

    @Flag(help: "Validate the configuration, print the effective settings (secrets masked) and exit.")
    var checkConfig = false

    func run() async throws {
        let settings = try location.settings(extra: [
            "listen": listen, "http": http, "database-url": databaseURL, "writers": writers, "pipeline": pipeline,
            "max-connections": maxConnections, "drain-timeout": drainTimeout, "log-level": logLevel,
            "log-format": logFormat, "tls-cert": tlsCert, "tls-key": tlsKey,
            "max-unauthenticated": maxUnauthenticated, "max-unauthenticated-per-address": maxUnauthenticatedPerAddress,
            "handshake-timeout": handshakeTimeout, "http-max-connections": httpMaxConnections,
            "http-idle-timeout": httpIdleTimeout,
        ])
        let level = try Self.logLevel(settings)
        guard let format = LogFormat(rawValue: settings["log-format"] ?? "text") else {
            throw SettingsError("log-format \"\(settings["log-format"] ?? "")\" (from \(settings.origin("log-format"))) is not text or json")
        }
        if checkConfig {
            try Self.validate(settings)
            print(settings.effectiveConfiguration())
            print("# configuration OK")
            return
        }
        let sharedLevel = LogSetup.bootstrap(format: format, level: level)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "sluiced")

        guard let listen = try settings.address("listen") else { throw SettingsError("listen cannot be \"off\"") }
        let http = try settings.address("http")
        let stateDir = settings["state-dir"] ?? "./sluice-state"
        let tokenPath = LocationOptions.tokenPath(settings)
        let tokens = try TokenFile.load(tokenPath)
        // Checked (files read) before the embedded PostgreSQL starts; the server loads them again at start.
        let tls = try Self.tls(settings)
        try tls?.validate()

        var cluster: PostgresCluster?
        let url: String
        if let given = settings["database-url"] {
            url = given
        } else {
            let embedded = try Self.embeddedCluster(stateDir: stateDir, logger: logger)
            logger.info("starting embedded PostgreSQL", metadata: ["data_directory": "\(embedded.dataDirectory)", "port": "\(embedded.port)"])
            try await embedded.start()
            cluster = embedded
            url = embedded.url
            // Only this user and root can connect (a Unix socket in a 0700 directory, no TCP).
            logger.notice(
                "embedded PostgreSQL is private to this user and root; open psql on it with `sluiced psql --state-dir \(stateDir)`",
                metadata: ["url": "\(url)"])
        }

        var configuration = SluiceServer.Configuration(
            host: listen.host, port: listen.port, httpHost: http?.host, httpPort: http?.port ?? 0,
            writerPool: .init(databaseURL: url, writers: try settings.int("writers", range: 1...64) ?? 2),
            tokens: tokens)
        configuration.tls = tls
        if let k = try settings.int("pipeline", range: 1...256) { configuration.pipelineConcurrency = k }
        if let n = try settings.int("max-connections", range: 1...1_000_000) { configuration.maxConnections = n }
        if let t = try settings.double("drain-timeout") { configuration.drainTimeout = t }
        try Self.applyLimits(settings, to: &configuration)
        // One deadline for the whole drain (connections, then writers): SluiceServer.shutdown enforces it; the
        // pool's own limit (when it stops retrying an unreachable database) is no longer than that.
        configuration.writerPool.drainTimeout = configuration.drainTimeout

        let server = SluiceServer(configuration: configuration, logger: logger, metricsRegistry: registry)
        let drainReport = DrainOutcome()
        let daemon = Daemon(server: server, tokenPath: tokenPath, logLevel: sharedLevel, drainReport: drainReport, reloadSettings: {
            try location.settings(extra: ["log-level": logLevel])
        }, logger: logger)
        let group = ServiceGroup(
            services: [daemon], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        do {
            try await group.run()
        } catch {
            if let cluster { try? await cluster.stop() }
            throw error
        }
        if let cluster {
            logger.info("stopping embedded PostgreSQL")
            // Fast: disconnects any writer the drain left waiting on the database (its transaction rolls back).
            try await cluster.stop(mode: .fast)
        }
        if let report = drainReport.report, !report.writersDrained {
            // The drain deadline passed with readings not committed: say so in the exit status too.
            FileHandle.standardError.write(
                Data(
                    "sluiced: stopped after the \(configuration.drainTimeout) s drain deadline with \(report.unacknowledgedReadings) readings unacknowledged (clients resend them); exit \(Self.unacknowledgedExitCode)\n"
                        .utf8))
            throw ExitCode(Self.unacknowledgedExitCode)
        }
    }

    /// Exit status of a drain that ran out of time with readings unacknowledged (EX_TEMPFAIL).
    static let unacknowledgedExitCode: Int32 = 75

    static func logLevel(_ settings: Settings) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: settings["log-level"] ?? "info") else {
            throw SettingsError("log-level \"\(settings["log-level"] ?? "")\" (from \(settings.origin("log-level"))) is not one of trace, debug, info, notice, warning, error, critical")
        }
        return level
    }

    /// Everything `--check-config` can check without starting anything: each value parses, and the token
    /// file (if there is one) can be read.
    static func validate(_ settings: Settings) throws {
        guard try settings.address("listen") != nil else { throw SettingsError("listen cannot be \"off\"") }
        _ = try settings.address("http")
        _ = try settings.int("writers", range: 1...64)
        _ = try settings.int("pipeline", range: 1...256)
        _ = try settings.int("max-connections", range: 1...1_000_000)
        _ = try settings.double("drain-timeout")
        var scratch = SluiceServer.Configuration(writerPool: .init(databaseURL: ""))
        try applyLimits(settings, to: &scratch)
        _ = try logLevel(settings)
        _ = try TokenFile.load(LocationOptions.tokenPath(settings))
        try tls(settings)?.validate()
    }

    /// The pre-authentication and HTTP limits.
    static func applyLimits(_ settings: Settings, to configuration: inout SluiceServer.Configuration) throws {
        if let n = try settings.int("max-unauthenticated", range: 1...1_000_000) { configuration.maxUnauthenticatedConnections = n }
        if let n = try settings.int("max-unauthenticated-per-address", range: 1...1_000_000) {
            configuration.maxUnauthenticatedPerAddress = n
        }
        if let t = try settings.double("handshake-timeout") {
            guard t > 0 else { throw SettingsError("handshake-timeout = 0 (from \(settings.origin("handshake-timeout"))): give a number of seconds above 0") }
            configuration.timeouts.handshake = UInt64(t * 1e9)
        }
        if let n = try settings.int("http-max-connections", range: 1...100_000) { configuration.maxHTTPConnections = n }
        if let t = try settings.double("http-idle-timeout") { configuration.httpIdleTimeout = max(0.05, t) }
    }

    /// TLS on the ingest listener: `tls-cert` and `tls-key` together, or neither (plain TCP).
    static func tls(_ settings: Settings) throws -> SluiceServer.TLS? {
        let cert = settings["tls-cert"].flatMap { $0.isEmpty ? nil : $0 }
        let key = settings["tls-key"].flatMap { $0.isEmpty ? nil : $0 }
        switch (cert, key) {
        case (nil, nil):
            return nil
        case (let cert?, let key?):
            return SluiceServer.TLS(certificateChainPath: cert, privateKeyPath: key)
        case (let cert?, nil):
            throw SettingsError(
                "tls-cert = \"\(cert)\" (from \(settings.origin("tls-cert"))) needs tls-key, the certificate's private key "
                    + "(--tls-key, $SLUICE_TLS_KEY or tls-key = in the config file); TLS takes both or neither")
        case (nil, let key?):
            throw SettingsError(
                "tls-key = \"\(key)\" (from \(settings.origin("tls-key"))) needs tls-cert, the certificate chain "
                    + "(--tls-cert, $SLUICE_TLS_CERT or tls-cert = in the config file); TLS takes both or neither")
        }
    }

    /// The embedded cluster keeps its port (which names its Unix socket) across restarts, in
    /// `<state-dir>/postgres.port`, so a cluster left running by a crashed daemon is found again rather than
    /// duplicated. A new state directory is created private: 0700, or — when root runs the cluster as
    /// `postgres` — 0710 with group `postgres`, so the cluster's user can only pass through to its data directory.
    /// When `postgres` cannot get that far (a state directory under `/root`), the data directory goes
    /// elsewhere: see `EmbeddedClusterLocation`.
    static func embeddedCluster(stateDir: String, logger: Logger, create: Bool = true) throws -> PostgresCluster {
        if create { try createStateDirectory(stateDir) }
        let portFile = stateDir + "/postgres.port"
        let saved = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let location = try EmbeddedClusterLocation.resolve(stateDir: stateDir, create: create)
        if let why = location.relocatedBecause, create { logger.notice("embedded PostgreSQL: \(why)") }
        let cluster = PostgresCluster(dataDirectory: location.dataDirectory, port: saved, logger: logger)
        if saved == nil && create { try "\(cluster.port)\n".write(toFile: portFile, atomically: true, encoding: .utf8) }
        return cluster
    }

    static func createStateDirectory(_ stateDir: String) throws {
        guard !FileManager.default.fileExists(atPath: stateDir) else { return }
        try FileManager.default.createDirectory(
            atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(stateDir, 0o700)
        if geteuid() == 0, let group = getgrnam("postgres")?.pointee.gr_gid {
            // The cluster runs as postgres (PostgreSQL refuses root): let it reach <state-dir>/postgres, nothing more.
            chown(stateDir, 0, group)
            chmod(stateDir, 0o710)
        }
    }
}

/// `sluiced psql`: psql on the embedded cluster of a state directory, as user `sluice` over its private socket.
struct PsqlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psql", abstract: "Open psql on the embedded PostgreSQL of --state-dir.",
        discussion: """
            The embedded cluster accepts no TCP connections: only its own user and root reach its Unix socket. \
            Run this as the user sluiced runs as (or root) while sluiced is running. Arguments after -- go to psql.

            Examples:
              sluiced psql --state-dir /var/lib/sluice
              sluiced psql --state-dir ./sluice-state -- -c "SELECT count(*) FROM readings"
            """)

    @OptionGroup var location: LocationOptions

    @Argument(parsing: .captureForPassthrough, help: "Arguments for psql.")
    var psqlArguments: [String] = []

    func run() throws {
        // Passthrough capture takes --help too; psql's own help is `sluiced psql -- --help`.
        if let first = psqlArguments.first, ["--help", "-h", "help"].contains(first) { throw CleanExit.helpRequest(self) }
        let settings = try location.settings()
        let stateDir = settings["state-dir"] ?? "./sluice-state"
        guard FileManager.default.fileExists(atPath: stateDir + "/postgres/PG_VERSION") else {
            throw SettingsError("no embedded PostgreSQL in \(stateDir) (start sluiced without --database-url first)")
        }
        let cluster = try Serve.embeddedCluster(stateDir: stateDir, logger: Logger(label: "sluiced"), create: false)
        let candidates = ["psql"] + ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Double($0) ?? 0) > (Double($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin/psql" }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let psql = candidates.lazy.compactMap { candidate -> String? in
            if candidate.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil }
            return path.split(separator: ":").map { "\($0)/\(candidate)" }.first {
                FileManager.default.isExecutableFile(atPath: $0)
            }
        }.first
        guard let psql else { throw SettingsError("psql not found (install the postgresql-client package)") }
        let passthrough = psqlArguments.first == "--" ? Array(psqlArguments.dropFirst()) : psqlArguments
        let argv = [psql] + cluster.psqlArguments + passthrough
        let cArguments = argv.map { strdup($0) } + [nil]
        execv(psql, cArguments)
        throw SettingsError("cannot run \(psql): \(String(cString: strerror(errno)))")
    }
}

/// The drain's report, handed from the service to `Serve.run` for the exit status.
final class DrainOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: SluiceServer.DrainReport?
    var report: SluiceServer.DrainReport? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

/// The server as the service group runs it: start, tell systemd, reload on SIGHUP, drain on SIGTERM.
struct Daemon: Service {
    let server: SluiceServer
    let tokenPath: String
    let logLevel: SharedLogLevel
    /// What the drain left unacknowledged, for the exit status.
    let drainReport: DrainOutcome
    /// Re-reads flags, environment and config file, for SIGHUP.
    let reloadSettings: @Sendable () throws -> Settings
    let logger: Logger

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let systemd = SystemdNotifier(environment: environment)
        try await server.start()
        let listen = "\(server.configuration.host):\(server.localPort)"
        // The one line tests and scripts wait for (the address is the real one, also with port 0).
        FileHandle.standardError.write(Data("sluiced: listening on \(listen)\n".utf8))
        // Type=notify: ready once listening with the database reachable (start() connected and migrated).
        systemd.notify("READY=1\nSTATUS=listening on \(listen)")
        let watchdog = Task { [server, logger] in
            await Self.superviseForSystemd(server: server, systemd: systemd, environment: environment, logger: logger)
        }
        if let port = server.httpPort {
            logger.info("status and metrics", metadata: ["url": "http://\(server.configuration.httpHost ?? ""):\(port)/status"])
        }
        let reloader = Task { [server, tokenPath, logger, logLevel, reloadSettings] in
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                systemd.notify("RELOADING=1\nSTATUS=reloading tokens, log level and TLS certificate")
                do {
                    // The config and token files are blocking reads: NIO's thread pool, not the cooperative pool.
                    let (level, tokens) = try await NIOThreadPool.singleton.runIfActive {
                        let settings = try reloadSettings()
                        return (try Serve.logLevel(settings), try TokenFile.load(tokenPath))
                    }
                    server.reloadTokens(tokens)
                    if level != logLevel.level {
                        logger.notice("log level changed", metadata: ["from": "\(logLevel.level)", "to": "\(level)"])
                        logLevel.level = level
                    }
                } catch {
                    logger.error("reload failed; keeping the current tokens and log level", metadata: ["error": "\(error)"])
                }
                // Same certificate and key paths as at start (not re-resolved from the settings). A bad file keeps
                // the current certificate; reloadTLS logs either outcome itself.
                _ = try? await server.reloadTLS()
                systemd.notify("READY=1\nSTATUS=listening on \(listen)")
            }
        }
        try? await gracefulShutdown()
        systemd.notify("STOPPING=1\nSTATUS=draining")
        reloader.cancel()
        watchdog.cancel()
        let report = await server.shutdown()
        drainReport.report = report
    }

    /// Every few seconds: a `STATUS=` line with connections and readings/s, and — when systemd's watchdog is
    /// on — `WATCHDOG=1` at half its interval, but only after the server proved it is alive (every event loop
    /// answered and the pipeline runs). A wedged daemon stops pinging, and systemd restarts it.
    static func superviseForSystemd(
        server: SluiceServer, systemd: SystemdNotifier, environment: [String: String], logger: Logger
    ) async {
        guard systemd.isEnabled else { return }
        let watchdog = SystemdNotifier.watchdogInterval(environment: environment)
        let period = min(watchdog.map { $0 / 2 } ?? .seconds(5), .seconds(5))
        let clock = ContinuousClock()
        var last = (at: clock.now, readings: 0)
        while !Task.isCancelled {
            do { try await Task.sleep(for: period) } catch { return }
            guard let live = await server.liveness(timeout: period / 2) else { return }
            let now = clock.now
            let elapsed = now - last.at
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let rate = seconds > 0 ? Double(live.readingsAccepted - last.readings) / seconds : 0
            last = (now, live.readingsAccepted)
            let database = live.databaseReachable ? "" : ", database unreachable"
            var message = "STATUS=\(live.connections) connections, \(Int(rate.rounded())) readings/s\(database)"
            if watchdog != nil {
                if live.responsive {
                    message += "\nWATCHDOG=1"
                } else {
                    logger.error("not pinging the systemd watchdog: an event loop or the pipeline did not answer in time")
                }
            }
            systemd.notify(message)
        }
    }
}
