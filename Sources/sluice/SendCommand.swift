import ArgumentParser
import SluiceClient

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send readings from files or stdin (CSV or JSON lines).",
        discussion: """
            CSV lines are device,metric,timestamp,value[,quality] (a header line is skipped); JSON lines are \
            objects with "device", "metric", "timestamp", "value" and optionally "quality". Timestamps are RFC \
            3339 (2024-05-01T12:00:00.5Z) or Unix seconds, milliseconds, microseconds or nanoseconds, told apart by \
            magnitude. Lines that cannot be read are reported with their line number and skipped.

            Progress goes to stderr (a bar on a terminal, plain lines otherwise); the summary to stdout. Exit \
            status: 0 everything landed; 1 some lines or readings were rejected (reasons listed), the rest \
            landed; 2 some readings were not acknowledged (after --timeout, or a refused token).

            Ctrl-C (or SIGTERM) stops reading input, waits up to 5 s for outstanding acknowledgements, prints \
            the summary with what was not acknowledged, and exits with status 130 (143 for SIGTERM); a second \
            Ctrl-C exits at once.

            Examples:
              sluice send readings.csv
              sluice send --server 10.0.0.5:7878 --token "$TOKEN" day1.csv day2.csv
              mosquitto_sub -t sensors/# | sluice send --format jsonl --linger-ms 50
              sluice send --state-file /var/lib/gw/producer.json --timeout 300 backlog.jsonl
            """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Input files; none or - reads stdin.")
    var files: [String] = []

    @Option(help: "Input format: csv or jsonl (default: from the first line).")
    var format: ReadingLineParser.Format?

    @Option(help: "Readings per batch.")
    var batchSize = 5_000

    @Option(help: "Send a partial batch once its first reading has waited this long, in milliseconds.")
    var lingerMs = 200

    @Option(help: "Give up waiting for acknowledgements after this many seconds (default: wait for ever).")
    var timeout: Double?

    @Option(help: "Keep the producer identity and seq in this file, so a restarted sender is the same producer.")
    var stateFile: String?

    @Option(help: "Seconds between progress lines when stderr is not a terminal.")
    var progressInterval: Double = 5

    @Flag(name: .shortAndLong, help: "Print the summary only when something went wrong.")
    var quiet = false

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lingerMs >= 0 else { throw ValidationError("--linger-ms cannot be negative") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
        guard progressInterval > 0 else { throw ValidationError("--progress-interval must be positive") }
    }

    func run() async throws {
        // First, so that a Ctrl-C during start-up is also answered with a summary.
        let interrupts = InterruptSignals()
        let delivery = try await Delivery(
            command: "send", options: connection, batchSize: batchSize, stateFile: stateFile)
        let events = delivery.watchEvents()
        let reader = InputReader(paths: files, format: format, batchSize: batchSize, linger: .milliseconds(lingerMs))
        let tty = Console.shared.stderrIsTTY
        let progress = quiet ? nil : delivery.showProgress(
            every: tty ? .milliseconds(200) : .milliseconds(Int64(progressInterval * 1000)), reader: reader)
        let timeout = timeout.map { Duration.milliseconds(Int64($0 * 1000)) }
        let code = await delivery.runInterruptibly(
            interrupts, reader: reader, timeout: timeout, quiet: quiet, progress: progress, stateFile: stateFile
        ) {
            var read = 0
            input: for await item in reader.items {
                if interrupts.signalled != nil { break }
                switch item {
                case .batch(let readings):
                    reader.consumed()
                    do {
                        try await delivery.client.send(readings)
                        read += readings.count
                    } catch {
                        // Only an error retrying cannot fix ends up here; `finish` reports it.
                        break input
                    }
                case .badLine(let source, let line, let message):
                    await delivery.badLine(source: source, line: line, message: message)
                case .failed(let message):
                    await delivery.inputFailed(message)
                }
            }
            return read
        }
        events.cancel()
        if code != 0 { throw ExitCode(code) }
    }
}

extension ReadingLineParser.Format: ExpressibleByArgument {}
