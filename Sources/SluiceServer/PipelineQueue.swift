import NIOConcurrencyHelpers

/// The pipeline's job queue: many producers (the event loops), several consumers (the task group's workers).
///
/// A worker that finds a job waiting takes it without suspending; one that finds none parks until a job or
/// `finish()` arrives. Compared with one child task per job fed from an `AsyncStream`, a job costs one
/// wake-up at most instead of a consumer resume plus a task creation, which is most of the overhead of a small
/// batch. Unbounded by itself: `SessionHandler` bounds what each connection may have queued.
final class PipelineQueue<Job: Sendable>: Sendable {
    private struct State {
        var jobs: [Job] = []
        var head = 0
        var waiters: [CheckedContinuation<Job?, Never>] = []
        var finished = false

        mutating func popJob() -> Job? {
            guard head < jobs.count else { return nil }
            let job = jobs[head]
            head += 1
            // Compact once the consumed prefix dominates, so the array does not grow for ever.
            if head >= 1024 && head * 2 >= jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            return job
        }
    }

    private enum Taken {
        case job(Job)
        case end
        case empty
    }

    private let state = NIOLockedValueBox(State())

    init() {}

    /// Queues a job, handing it straight to a parked worker if there is one. Ignored after `finish()`.
    func submit(_ job: Job) {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Job?, Never>? in
            guard !s.finished else { return nil }
            if !s.waiters.isEmpty { return s.waiters.removeFirst() }
            s.jobs.append(job)
            return nil
        }
        waiter?.resume(returning: job)
    }

    /// No more jobs: workers finish what is queued, then `next()` returns nil.
    func finish() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Job?, Never>] in
            s.finished = true
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// The next job, or nil once finished and drained.
    func next() async -> Job? {
        let taken = state.withLockedValue { s -> Taken in
            if let job = s.popJob() { return .job(job) }
            return s.finished ? .end : .empty
        }
        switch taken {
        case .job(let job): return job
        case .end: return nil
        case .empty: break
        }
        return await withCheckedContinuation { continuation in
            // Checked again under the lock: a job or finish() may have arrived since.
            let now = state.withLockedValue { s -> Taken in
                if let job = s.popJob() { return .job(job) }
                if s.finished { return .end }
                s.waiters.append(continuation)
                return .empty
            }
            switch now {
            case .job(let job): continuation.resume(returning: job)
            case .end: continuation.resume(returning: nil)
            case .empty: break
            }
        }
    }
}
