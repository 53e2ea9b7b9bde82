import SluiceClient

/// The interrupt handling `send` and `replay` share: the first Ctrl-C or SIGTERM stops the input, waits a
/// bounded time for outstanding acknowledgements (saying so), and prints the summary with what was left
/// unacknowledged; the exit code is then 128 + the signal's number. A second signal is `InterruptSignals`'
/// business: it exits at once.
extension Delivery {
    /// How long an interrupted command waits for outstanding acknowledgements (`--timeout` if shorter).
    static let interruptWait = Duration.seconds(5)

    /// Runs `input` (reads `reader` and hands readings to `client`; returns how many it handed over) in a task
    /// of its own, so that an interrupt ends the run even while the input waits for a line (an open pipe), for
    /// room in the client's buffer, or for a reading's time to come (a paced replay). Then finishes: flushes
    /// under `timeout`, prints the summary and returns the exit code.
    ///
    /// On an interrupt, `reader` stops and the input task is cancelled: `input` must end when it sees
    /// `interrupts.signalled` or cancellation, hand nothing more to the client, and report nothing about the
    /// cancellation itself (the summary does).
    func runInterruptibly(
        _ interrupts: InterruptSignals, reader: InputReader, timeout: Duration?, quiet: Bool,
        progress: Task<Void, Never>?, stateFile: String?, input: @escaping @Sendable () async -> Int
    ) async -> Int32 {
        // `stops` says which came first: the input's end (nil) or a signal.
        let (stops, stop) = AsyncStream.makeStream(of: Int32?.self)
        let feeding = Task {
            let read = await input()
            stop.yield(nil)
            return read
        }
        let relay = Task { for await signal in interrupts.first { stop.yield(signal) } }
        var first = stops.makeAsyncIterator()
        let interrupted = await first.next() ?? nil
        relay.cancel()
        guard let interrupted else {
            return await finish(readingsRead: await feeding.value, timeout: timeout, quiet: quiet, progress: progress)
        }
        reader.stop()
        feeding.cancel()
        let wait = min(Self.interruptWait, timeout ?? Self.interruptWait)
        let unacked = await client.statistics.readingsOutstanding
        await Console.shared.note(
            "sluice: interrupted: waiting up to \(Format.duration(wait.seconds)) for \(Format.count(unacked)) unacknowledged readings… (interrupt again to exit at once)")
        // What the client was given is what was read: the input task may not have ended yet (it can be
        // waiting for room in the client's buffer), so its own count is not waited for.
        return await finish(
            readingsRead: await client.statistics.readingsQueued, timeout: wait, quiet: quiet, progress: progress,
            interruption: .init(signal: interrupted, stateFile: stateFile))
    }
}
