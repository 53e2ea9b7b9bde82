import Foundation

/// Runs blocking work (libpq calls, process waits, sleeps) on a thread this module owns, so that it never
/// occupies a NIO event loop or a thread of Swift's cooperative pool.
enum OwnThread {
    /// Runs `body` on a new dedicated thread and returns its result to the awaiting task. For rare, slow
    /// operations (starting PostgreSQL, initdb); hot paths use long-lived threads instead.
    static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let thread = Thread {
                continuation.resume(with: Result { try body() })
            }
            thread.name = name
            thread.start()
        }
    }
}

/// A long-lived thread that owns some thread-confined state (typically a libpq connection) and runs jobs
/// against it one at a time, in submission order.
///
/// The state is created on the thread and never leaves it: jobs receive it `inout`, and only their
/// (Sendable) results travel back to the awaiting task.
final class StatefulWorker<State>: Sendable {
    private typealias Job = @Sendable (inout State) -> Void

    private struct Queue {
        var jobs: [Job?] = []  // nil = stop
        var stopped = false
    }

    private let queue = Locked(Queue())
    private let wakeUp = DispatchSemaphore(value: 0)

    /// Starts the thread; `makeState` runs on it.
    init(name: String, makeState: @escaping @Sendable () -> State) {
        let queue = self.queue
        let wakeUp = self.wakeUp
        let thread = Thread {
            var state = makeState()
            while true {
                wakeUp.wait()
                // Each signal matches one appended entry, so the queue is never empty here.
                let next: Job? = queue.withLock { $0.jobs.removeFirst() }
                guard let next else { break }
                next(&state)
            }
        }
        thread.name = name
        thread.start()
    }

    deinit { stop() }

    /// Runs `body` on the worker's thread with its state and returns the result.
    func run<T: Sendable>(_ body: @escaping @Sendable (inout State) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = queue.withLock { queue -> Bool in
                guard !queue.stopped else { return false }
                queue.jobs.append { state in continuation.resume(with: Result { try body(&state) }) }
                return true
            }
            if accepted {
                wakeUp.signal()
            } else {
                continuation.resume(throwing: StoreError.closed("this worker thread has been stopped"))
            }
        }
    }

    /// Lets the thread finish the jobs already queued, then exit (dropping its state).
    func stop() {
        let first = queue.withLock { queue -> Bool in
            defer { queue.stopped = true }
            if !queue.stopped { queue.jobs.append(nil) }
            return !queue.stopped
        }
        if first { wakeUp.signal() }
    }
}
