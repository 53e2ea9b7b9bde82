import ArgumentParser
import Logging
import SluiceClient

/// The `sluice` command: send, replay, bench and status against sluiced.
@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Send sensor readings to sluiced, replay recordings, benchmark it, and read its status.",
        discussion: """
            Examples:
              sluice send readings.csv
              tail -f gateway.jsonl | sluice send --server db-gw:7878 --linger-ms 100
              sluice send --server ingest.example.com:7878 --tls-ca ca.pem readings.csv   # TLS, private CA
              sluice replay capture.csv --speed 10 --shift-to-now
              sluice bench --connections 8 --batch-size 1000 --duration 10
              sluice status --http 10.0.0.5:7879 --http 10.0.0.6:7879
              sluice spool inspect /var/lib/gw/spool
            """,
        version: sluiceClientVersion,
        subcommands: [SendCommand.self, ReplayCommand.self, BenchCommand.self, StatusCommand.self, SpoolCommand.self])
}

/// Where to connect and how to authenticate; shared by the commands that talk the wire protocol.
struct ConnectionOptions: ParsableArguments {
    @Option(
        name: .customLong("server"),
        help: ArgumentHelp(
            "sluiced address, host:port; repeat to give fallbacks tried in turn.", valueName: "host:port"))
    var servers: [String] = []

    @Option(help: "Producer token (default: $SLUICE_TOKEN; empty for anonymous loopback).")
    var token: String?

    @OptionGroup(title: "TLS") var tls: TLSOptions

    @Flag(help: "Send batches uncompressed (default: zstd when it makes them smaller).")
    var noCompression = false

    @Flag(name: .shortAndLong, help: "Log connection details to stderr.")
    var verbose = false

    func endpoints() throws -> [Endpoint] {
        let texts = servers.isEmpty ? ["127.0.0.1:7878"] : servers
        do {
            return try texts.map { try Endpoint(parsing: $0) }
        } catch {
            throw ValidationError("\(error)")
        }
    }

    var resolvedToken: String {
        token ?? ProcessEnvironment.get("SLUICE_TOKEN") ?? ""
    }

    func validate() throws { _ = try endpoints() }

    func logger() -> Logger {
        var logger = Logger(label: "sluice") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = verbose ? .debug : .critical
        return logger
    }
}
