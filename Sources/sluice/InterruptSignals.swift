import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Ctrl-C (SIGINT) and SIGTERM for a command that wants to finish politely: the first one is reported
/// once through `first` (the command stops reading, waits a bounded time for acks and prints its summary);
/// a second one ends the process at once with status 128 + its number.
///
/// The signals are taken from their default action (`SIG_IGN`) and read by dispatch signal sources on a
/// private serial queue, so no handler runs in signal context and nothing waits on the cooperative pool.
final class InterruptSignals: Sendable {
    /// Yields the first signal's number, then finishes.
    let first: AsyncStream<Int32>
    private let sink: AsyncStream<Int32>.Continuation
    private let received = Atomic<Int>(0)
    private let firstSignal = Atomic<Int32>(0)
    private let queue = DispatchQueue(label: "sluice.signals")

    init(_ signals: [Int32] = [SIGINT, SIGTERM]) {
        (first, sink) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            // The handler holds its source: that cycle keeps the source alive for the process's life.
            source.setEventHandler { [weak self] in
                // Signals arriving before the handler runs are coalesced: `data` says how many there were.
                self?.received(number, count: Int(source.data))
            }
            source.resume()
        }
    }

    /// The first signal received, if any.
    var signalled: Int32? {
        let number = firstSignal.load(ordering: .acquiring)
        return number == 0 ? nil : number
    }

    /// Runs on `queue`, one event at a time.
    private func received(_ number: Int32, count: Int) {
        let before = received.add(max(count, 1), ordering: .acquiringAndReleasing).oldValue
        if before == 0 {
            firstSignal.store(number, ordering: .releasing)
            sink.yield(number)
            sink.finish()
            if count < 2 { return }
        }
        // A second interrupt: the user does not want to wait. Say so in one write and leave now.
        let text = "\nsluice: \(Self.name(of: number)) again: exiting at once without waiting for acknowledgements\n"
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        _exit(128 + number)
    }

    /// "SIGINT" or "SIGTERM" (or "signal N").
    static func name(of number: Int32) -> String {
        switch number {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        default: "signal \(number)"
        }
    }
}
