import Logging

/// Writes batches to PostgreSQL exactly once, through N writer threads that each own a libpq connection.
///
/// - A producer's batches commit in submission order: while it has batches in flight, its next ones go to
///   the same writer; a producer with nothing in flight goes to the least loaded writer (balance without
///   reordering).
/// - A writer coalesces its queued batches into one transaction (group commit) of at most
///   `maxGroupReadings` readings; a completion is delivered only after that transaction committed.
/// - Dedup: `producers.committed_seq` is checked and advanced inside the same transaction as the rows, so a
///   resent batch is `.duplicate`, for ever — after a retry, a pool restart or a database restart.
/// - A producer's seq N+1 never commits while seq N is unresolved, so no batch is ever failed and skipped:
///   - an error that is not about the data (`SQLStateClass.notAboutTheData`: connection lost, read-only after
///     a failover, lock timeout, disk full, permissions, ...) keeps the group and retries it with capped
///     exponential backoff and jitter until it commits (or `shutdown()` gives up after `drainTimeout`);
///     `stall` says why meanwhile, and an error is logged once a stall lasts `stallErrorAfter`;
///   - readings PostgreSQL refuses for their data (a constraint, a trigger, a value out of range) are
///     isolated row by row (`RowIsolation`) and dead-lettered with PostgreSQL's reason in the same
///     transaction as the rest, which commits; the outcome lists them (`.committed(refused:)`).
///
/// Completions run on the writer thread: keep them short (hop to your event loop or resume a task).
public final class WriterPool: Sendable {
    private let core: PoolCore
    private let logger: Logger
    private let admin: StatefulWorker<PGConnection?>

    public init(configuration: Configuration, logger: Logger) {
        var configuration = configuration
        configuration.writers = max(1, configuration.writers)
        configuration.maxGroupReadings = max(1, configuration.maxGroupReadings)
        configuration.queueCapacityReadings = max(1, configuration.queueCapacityReadings)
        core = PoolCore(configuration: configuration)
        self.logger = logger
        admin = StatefulWorker(name: "sluice-store-admin") { nil }
    }

    deinit { admin.stop() }

    /// Migrates the schema, creates the partitions around today, connects every writer and starts their
    /// threads. Throws a clear error if the database is unreachable or the schema cannot be migrated.
    public func start() async throws {
        let configuration = core.configuration
        let canStart = core.state.withLock { state -> Bool in
            guard state.phase == .created else { return false }
            state.phase = .running  // reserved; reset below if starting fails
            return true
        }
        guard canStart else { throw StoreError.closed("WriterPool.start() called twice or after shutdown") }
        do {
            let applied = try await admin.run { connection in
                let live = try Self.adminConnection(&connection, configuration: configuration)
                let applied = try Migrator.migrate(live)
                try Migrator.ensurePartitions(
                    live, daysBack: configuration.partitionDaysBack, daysAhead: configuration.partitionDaysAhead)
                return applied
            }
            if !applied.isEmpty { logger.info("schema migrated", metadata: ["versions": "\(applied)"]) }
            try await startWriters()
        } catch let error as PGError {
            core.state.withLock { $0.phase = .stopped }
            throw error.storeError
        } catch {
            core.state.withLock { $0.phase = .stopped }
            throw error
        }
        logger.info("writer pool started", metadata: ["writers": "\(configuration.writers)"])
    }

    private func startWriters() async throws {
        let writers = core.configuration.writers
        core.state.withLock { $0.runningWriters = writers }
        let failures = Locked<(reported: Int, first: (any Error)?)>((0, nil))
        let firstFailure: (any Error)? = await withCheckedContinuation { continuation in
            for index in 0..<writers {
                WriterThread.launch(index: index, core: core, logger: logger) { error in
                    let done = failures.withLock { failures -> (any Error)?? in
                        failures.reported += 1
                        if failures.first == nil { failures.first = error }
                        return failures.reported == writers ? .some(failures.first) : .none
                    }
                    if let result = done { continuation.resume(returning: result) }
                }
            }
        }
        if let firstFailure {
            // Stop the writers that did connect; they find nothing queued and exit.
            core.state.withLock { $0.phase = .stopped }
            core.wakeAll()
            throw firstFailure
        }
    }

    /// Queues `batch` and calls `completion` with its outcome once its transaction committed (or it failed).
    ///
    /// Never waits: when the pool is at `queueCapacityReadings` the batch is admitted anyway and counted in
    /// `stats.overCapacitySubmissions` — the flow controller upstream (credit) is what keeps the queue bounded.
    /// It only waits behind earlier `submit(_:) async` calls that are waiting for room, to keep the order.
    /// A malformed batch (columns of unequal length, seq 0) or a submit after `shutdown()` completes with
    /// `.failed` right away, possibly before `submit` returns.
    public func submit(_ batch: WriteBatch, completion: @escaping @Sendable (BatchOutcome) -> Void) {
        enqueue(batch, waitsForRoom: false, completion: completion)
    }

    /// Queues `batch`, waiting first for room in the queue if it is full, and returns its outcome once its
    /// transaction committed (or it failed). Cancelling the task does not withdraw the batch.
    public func submit(_ batch: WriteBatch) async -> BatchOutcome {
        await withCheckedContinuation { continuation in
            enqueue(batch, waitsForRoom: true) { continuation.resume(returning: $0) }
        }
    }

    private func enqueue(_ batch: WriteBatch, waitsForRoom: Bool, completion: @escaping @Sendable (BatchOutcome) -> Void) {
        if let problem = batch.structuralProblem {
            completion(.failed(problem))
            return
        }
        let capacity = core.configuration.queueCapacityReadings
        var item = QueuedBatch(
            batch: batch, readings: batch.readingCount, completion: completion, waitsForRoom: waitsForRoom, writer: 0)
        let refusal = core.state.withLock { state -> String? in
            switch state.phase {
            case .created: return "the writer pool is not started"
            case .draining, .stopped: return "the writer pool is shut down"
            case .running: break
            }
            item.writer = state.assignWriter(to: batch.producer, readings: item.readings)
            let hasRoom = state.admittedReadings + item.readings <= capacity || state.admittedReadings == 0
            if state.waiting.isEmpty && (hasRoom || !waitsForRoom) {
                state.admit(item, capacity: capacity)
            } else {
                state.waiting.append(item)
                state.waitingReadings += item.readings
            }
            return nil
        }
        if let refusal {
            completion(.failed("\(refusal): batch seq \(batch.seq) of producer \(batch.producer) was not written"))
        } else {
            core.wake([item.writer])
        }
    }

    /// A snapshot of queue depth, latency and counters.
    public var stats: WriterPoolStats {
        var stats = core.state.withLock { $0.stats }
        stats.queueCapacityReadings = core.configuration.queueCapacityReadings
        return stats
    }

    /// Why a writer is not committing, nil while none is stalled (the longest-stalled writer's reason).
    public var stall: WriterStall? { core.state.withLock { $0.writerStalls.compactMap { $0 }.min { $0.since < $1.since } } }

    /// Tests: the next `count` successful COMMITs look to the writer like a connection lost during COMMIT.
    func loseNextCommitReplies(_ count: Int) { core.testing.withLock { $0.loseCommitReplies = count } }

    /// The highest seq of `producer` committed so far, 0 if none (what `Welcome.committed_seq` reports).
    public func committedSeq(of producer: ProducerID) async throws -> UInt64 {
        let configuration = core.configuration
        let text = "\(producer)"
        do {
            return try await admin.run { connection in
                let rows = try Self.withAdminRetry(&connection, configuration: configuration) { live in
                    try live.query("SELECT committed_seq FROM producers WHERE producer_id = $1::uuid", parameters: [text])
                }
                return rows.first?.first.flatMap { $0.flatMap { Int64($0) } }.map { UInt64(bitPattern: $0) } ?? 0
            }
        } catch let error as PGError {
            throw error.storeError
        }
    }

    /// Stops taking batches, commits everything queued, then stops the writer threads. If PostgreSQL stays
    /// unreachable for longer than `drainTimeout`, what is left completes `.failed` (nothing half-written).
    /// Calling it again (or concurrently) returns once the first drain is done.
    public func shutdown() async {
        enum Role { case drainer, waiter, nothing }
        let role = core.state.withLock { state -> Role in
            switch state.phase {
            case .running:
                state.phase = .draining
                return .drainer
            case .draining:
                return .waiter  // another caller is draining: return only once it is done
            case .created, .stopped:
                state.phase = .stopped
                return .nothing
            }
        }
        guard role != .nothing else {
            admin.stop()
            return
        }
        core.wakeAll()
        let core = self.core
        let timeout = core.configuration.drainTimeout
        let timer = Task {
            guard role == .drainer else { return }
            try await Task.sleep(nanoseconds: UInt64(max(0, timeout) * 1e9))
            core.state.withLock { $0.abandon = true }
            core.wakeAll()
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let alreadyDone = core.state.withLock { state -> Bool in
                if state.runningWriters == 0 { return true }
                state.onAllWritersExited.append { continuation.resume() }
                return false
            }
            if alreadyDone { continuation.resume() }
        }
        timer.cancel()
        admin.stop()
        logger.info("writer pool stopped", metadata: ["committed_batches": "\(stats.committedBatches)"])
    }

    // MARK: - Admin connection (runs on the admin worker's thread)

    private static func adminConnection(
        _ connection: inout PGConnection?, configuration: Configuration
    ) throws -> PGConnection {
        if let live = connection, live.isHealthy { return live }
        let fresh = try PGConnection(url: configuration.databaseURL, applicationName: configuration.applicationName)
        connection = fresh
        return fresh
    }

    /// Runs `body` on the admin connection, reconnecting once if the connection turned out to be broken.
    private static func withAdminRetry<T>(
        _ connection: inout PGConnection?, configuration: Configuration, _ body: (PGConnection) throws -> T
    ) throws -> T {
        let live = try adminConnection(&connection, configuration: configuration)
        do {
            return try body(live)
        } catch let error as PGError where error.connectionBroken || !live.isHealthy {
            connection = nil
            return try body(try adminConnection(&connection, configuration: configuration))
        }
    }
}
