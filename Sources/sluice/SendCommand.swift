import ArgumentParser
import Foundation
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

            With --spool DIR, readings are written to a spool on disk before they count as taken, and leave it \
            only once acknowledged: a power cut, a kill or a reboot loses nothing taken, and a sluiced that is \
            away for hours costs only disk. A restarted `sluice send --spool DIR` first resends what the spool \
            holds (same seqs: exactly once), then reads its input as continuing after the input lines the \
            spool says it took ("input taken to line N" in the summary and in `sluice spool inspect DIR`): \
            give it the input from line N+1 (tail -n +N+1 file). When the spool holds --spool-max, reading \
            stops (a pipe into sluice send then blocks its writer) until acknowledgements free space; nothing \
            is dropped unless --spool-drop-oldest says so, and then it is counted. The spool keeps the \
            producer identity: --state-file, if given too, only seeds a new spool with its identity.

            Ctrl-C (or SIGTERM) stops reading input, waits up to 5 s for outstanding acknowledgements, prints \
            the summary with what was not acknowledged, and exits with status 130 (143 for SIGTERM); a second \
            Ctrl-C exits at once.

            Examples:
              sluice send readings.csv
              sluice send --server 10.0.0.5:7878 --token "$TOKEN" day1.csv day2.csv
              mosquitto_sub -t sensors/# | sluice send --format jsonl --linger-ms 50
              sluice send --state-file /var/lib/gw/producer.json --timeout 300 backlog.jsonl
              tail -f gateway.jsonl | sluice send --spool /var/lib/gw/spool --spool-max 1GiB
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

    @Option(help: "Keep the producer identity and seq in this file, so a restarted sender is the same producer (with --spool, the spool keeps them; this file then only seeds a new spool).")
    var stateFile: String?

    @Option(
        help: ArgumentHelp(
            "Spool readings to this directory before they count as taken; resend what it holds after a restart.",
            valueName: "dir"))
    var spool: String?

    @Option(help: ArgumentHelp("Most the spool may hold on disk (e.g. 1GiB, 512MiB, 100MB); then reading stops.", valueName: "size"))
    var spoolMax: String = "1GiB"

    @Option(help: "When spooled readings reach the disk: always (fsync before a batch counts as taken; survives power cuts), interval (within 200 ms), never (survives kills and crashes, not power cuts).")
    var spoolFsync: SpoolFsyncChoice = .always

    @Flag(help: "When the spool is full, drop its oldest readings not yet sent (counted in the summary) instead of pausing input; sent ones wait for their acks.")
    var spoolDropOldest = false

    @Option(help: "Seconds between progress lines when stderr is not a terminal.")
    var progressInterval: Double = 5

    @Flag(name: .shortAndLong, help: "Print the summary only when something went wrong.")
    var quiet = false

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lingerMs >= 0 else { throw ValidationError("--linger-ms cannot be negative") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
        guard progressInterval > 0 else { throw ValidationError("--progress-interval must be positive") }
        guard let max = ByteSize.parse(spoolMax) else {
            throw ValidationError("--spool-max \(spoolMax): give a size like 1GiB, 512MiB, 100MB or a number of bytes")
        }
        guard max >= 64 << 10 else { throw ValidationError("--spool-max must be at least 64KiB (it is \(spoolMax))") }
        if spool == nil && (spoolDropOldest || spoolFsync != .always || spoolMax != "1GiB") {
            throw ValidationError("--spool-max, --spool-fsync and --spool-drop-oldest need --spool DIR")
        }
    }

    var spoolConfiguration: SpoolConfiguration? {
        spool.map { dir in
            SpoolConfiguration(
                directory: dir, maxBytes: ByteSize.parse(spoolMax) ?? 1 << 30, fsync: spoolFsync.policy,
                whenFull: spoolDropOldest ? .dropOldest : .block)
        }
    }

    func run() async throws {
        // First, so that a Ctrl-C during start-up is also answered with a summary.
        let interrupts = InterruptSignals()
        let delivery = try await Delivery(
            command: "send", options: connection, batchSize: batchSize, stateFile: stateFile, spool: spoolConfiguration)
        // The input continues after what the spool already took: positions are counted on from there.
        let positionBase = delivery.client.spoolRecovery?.inputPosition ?? 0
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
                case .batch(let readings, let linesThrough):
                    reader.consumed()
                    do {
                        try await delivery.client.send(readings, inputPosition: positionBase + UInt64(linesThrough))
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

enum SpoolFsyncChoice: String, ExpressibleByArgument, CaseIterable {
    case always, interval, never

    var policy: SpoolFsync {
        switch self {
        case .always: .always
        case .interval: .interval(.milliseconds(200))
        case .never: .never
        }
    }
}

/// Sizes as people write them: 1GiB, 512MiB, 64KiB, 100MB, 1G, 4096.
enum ByteSize {
    static func parse(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Int)] = [
            ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40), ("kb", 1_000), ("mb", 1_000_000),
            ("gb", 1_000_000_000), ("tb", 1_000_000_000_000), ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("b", 1),
        ]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let n = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { return nil }
            return Int(n * Double(factor))
        }
        return Int(t)
    }

    static func describe(_ bytes: Int) -> String {
        if bytes >= 1 << 30 { return Format.fixed(Double(bytes) / Double(1 << 30), 2) + " GiB" }
        if bytes >= 1 << 20 { return Format.fixed(Double(bytes) / Double(1 << 20), 1) + " MiB" }
        if bytes >= 1 << 10 { return Format.fixed(Double(bytes) / Double(1 << 10), 1) + " KiB" }
        return "\(bytes) B"
    }
}
