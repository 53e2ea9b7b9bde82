import ArgumentParser
import SluiceClient

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Resend a recording at its original pace, or N times faster.",
        discussion: """
            Readings are sent when their time comes: reading i goes out (t_i − t_0) / speed after the first, in \
            file order (a reading whose time is earlier than the one before goes out at once). Input formats, \
            bad-line handling and progress are those of `sluice send`, and so is the exit status: 0 everything \
            landed; 1 some lines or readings were rejected (reasons listed), the rest landed; 2 some readings \
            were not acknowledged (after --timeout, or a refused token); 130 (143) interrupted by Ctrl-C \
            (SIGTERM), whatever was acknowledged.

            Recordings older than the server's max age (7 days by default) would be dead-lettered as too old:
            --shift-to-now moves every timestamp so the first reading is stamped now.

            Ctrl-C (or SIGTERM) stops the replay at once, also while it waits for a reading's time: readings \
            not yet sent are not sent. It waits up to 5 s for outstanding acknowledgements, prints the summary \
            with what was not acknowledged, and exits with status 130 (143 for SIGTERM); a second Ctrl-C exits \
            at once. Each replay is a new producer: a re-run starts the recording from its beginning, and what \
            the interrupted run wrote is written again.

            Examples:
              sluice replay capture.csv
              sluice replay capture.jsonl --speed 60 --shift-to-now
            """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Recordings to replay, in order; none or - reads stdin.")
    var files: [String] = []

    @Option(help: "Input format: csv or jsonl (default: from the first line).")
    var format: ReadingLineParser.Format?

    @Option(help: "Replay this many times faster than recorded.")
    var speed: Double = 1

    @Flag(help: "Shift timestamps so the first reading is stamped with the current time.")
    var shiftToNow = false

    @Option(help: "Largest batch, in readings.")
    var batchSize = 5_000

    @Option(help: "Readings due within this many milliseconds of each other travel in one batch.")
    var lingerMs = 20

    @Option(help: "Give up waiting for acknowledgements after this many seconds (default: wait for ever).")
    var timeout: Double?

    @Option(help: "Seconds between progress lines when stderr is not a terminal.")
    var progressInterval: Double = 5

    @Flag(name: .shortAndLong, help: "Print the summary only when something went wrong.")
    var quiet = false

    func validate() throws {
        guard speed > 0, speed.isFinite else { throw ValidationError("--speed must be a positive number") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lingerMs >= 0 else { throw ValidationError("--linger-ms cannot be negative") }
    }

    func run() async throws {
        // First, so that a Ctrl-C during start-up is also answered with a summary.
        let interrupts = InterruptSignals()
        let delivery = try await Delivery(command: "replay", options: connection, batchSize: batchSize, stateFile: nil, spool: nil)
        let events = delivery.watchEvents()
        let reader = InputReader(paths: files, format: format, batchSize: 1_000, linger: .milliseconds(50))
        let tty = Console.shared.stderrIsTTY
        let progress = quiet ? nil : delivery.showProgress(
            every: tty ? .milliseconds(200) : .milliseconds(Int64(progressInterval * 1000)), reader: reader)
        let code = await delivery.runInterruptibly(
            interrupts, reader: reader, timeout: timeout.map { .milliseconds(Int64($0 * 1000)) }, quiet: quiet,
            progress: progress, stateFile: nil
        ) { [speed, shiftToNow, lingerMs, batchSize] in
            var pacer = ReplayPacer(speed: speed, shiftToNow: shiftToNow, tolerance: .milliseconds(lingerMs))
            var due: [Reading] = []
            var read = 0
            func flush() async throws {
                // Interrupted: readings not yet handed to the client are not sent (`send` stops reading too).
                if interrupts.signalled != nil { throw CancellationError() }
                guard !due.isEmpty else { return }
                try await delivery.client.send(due)
                read += due.count
                due.removeAll(keepingCapacity: true)
            }
            do {
                for await item in reader.items {
                    switch item {
                    case .batch(let readings, _):
                        reader.consumed()
                        for var reading in readings {
                            let (at, shifted) = pacer.schedule(reading.timeMicros)
                            reading.timeMicros = shifted
                            if at > .now + pacer.tolerance {
                                try await flush()
                                // An interrupt cancels this wait: a paced replay stops at once.
                                try await Task.sleep(until: at, clock: .continuous)
                            }
                            due.append(reading)
                            if due.count >= batchSize { try await flush() }
                        }
                        try await flush()
                    case .badLine(let source, let line, let message):
                        await delivery.badLine(source: source, line: line, message: message)
                    case .failed(let message):
                        await delivery.inputFailed(message)
                    }
                }
                try await flush()
            } catch {
                // An interrupt is reported by the summary, not as an error here.
                if interrupts.signalled == nil && !Task.isCancelled { await Console.shared.note("sluice: \(error)") }
            }
            return read
        }
        events.cancel()
        if code != 0 { throw ExitCode(code) }
    }
}

/// When each reading of a recording is due, given the replay speed.
struct ReplayPacer {
    let speed: Double
    let shiftToNow: Bool
    let tolerance: Duration
    private var origin: (instant: ContinuousClock.Instant, micros: Int64, shift: Int64)?

    init(speed: Double, shiftToNow: Bool, tolerance: Duration) {
        self.speed = speed
        self.shiftToNow = shiftToNow
        self.tolerance = tolerance
    }

    /// The instant `micros` is due, and the timestamp to send it with.
    mutating func schedule(_ micros: Int64) -> (ContinuousClock.Instant, Int64) {
        if origin == nil { origin = (.now, micros, shiftToNow ? nowMicros() - micros : 0) }
        let o = origin!
        let offset = max(0, Double(micros - o.micros)) / speed
        // With --shift-to-now a sped-up replay would stamp readings in the future: stamp them when sent.
        let stamped = shiftToNow ? o.shift + o.micros + Int64(offset) : micros
        return (o.instant + .microseconds(Int64(offset)), stamped)
    }
}
