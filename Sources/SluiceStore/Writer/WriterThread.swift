import Dispatch
import Foundation
import Logging

/// One writer: a thread that owns a libpq connection and commits its queue's batches in groups.
///
/// Everything here runs on that thread; only `PoolCore` is shared. The loop takes groups from the writer's
/// queue; `process` retries each until it commits (`GroupCommit` is one transaction) and only then delivers
/// the completions.
final class WriterThread {
    let index: Int
    let core: PoolCore
    let logger: Logger
    private var connection: PGConnection?
    let encoder = ReadingsCopyEncoder()
    let buffer = CopyBuffer(capacity: 1 << 20)
    /// The current stall has been logged at error level (once per stall).
    private var stallReported = false
    private let backoff: Backoff
    private var nextPartitionCheck: DispatchTime
    private var hadConnection = false
    /// Producers whose `producers` row this writer has seen: their INSERT ... ON CONFLICT can be skipped.
    /// Only an optimisation: a row found missing (deleted by hand) drops the cache and retries the group.
    var knownProducers = Set<ProducerID>()

    /// Bytes handed to PQputCopyData at a time: large, so a COPY costs few calls.
    static let flushThreshold = 512 * 1024

    /// Starts writer `index` on its own thread. `ready` is called once, on that thread, when the first
    /// connection succeeded (nil) or failed (the error; the thread then exits).
    static func launch(
        index: Int, core: PoolCore, logger: Logger, ready: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let thread = Thread {
            let writer = WriterThread(index: index, core: core, logger: logger)
            writer.run(ready: ready)
        }
        thread.name = "sluice-writer-\(index)"
        thread.start()
    }

    private init(index: Int, core: PoolCore, logger: Logger) {
        self.index = index
        self.core = core
        var logger = logger
        logger[metadataKey: "writer"] = "\(index)"
        self.logger = logger
        backoff = Backoff(
            initial: core.configuration.reconnectInitialDelay, maximum: core.configuration.reconnectMaxDelay)
        nextPartitionCheck = Self.deadline(after: core.configuration.partitionMaintenanceInterval)
    }

    var configuration: WriterPool.Configuration { core.configuration }

    // MARK: - Loop

    private func run(ready: @Sendable ((any Error)?) -> Void) {
        do {
            connection = try PGConnection(url: configuration.databaseURL, applicationName: configuration.applicationName)
            hadConnection = true
        } catch {
            ready(error)
            exit()
            return
        }
        ready(nil)
        while true {
            if index == 0 {
                // Writer 0 also keeps the partitions ahead created, so it wakes up for that even when idle.
                if core.wakeUps[index].wait(timeout: nextPartitionCheck) == .timedOut {
                    maintainPartitionsIfDue()
                    continue
                }
            } else {
                core.wakeUps[index].wait()
            }
            let next = core.state.withLock { state -> [QueuedBatch]? in
                let group = state.takeGroup(writer: index, maxReadings: configuration.maxGroupReadings)
                if group.isEmpty {
                    let done = state.phase == .stopped || (state.phase == .draining && state.waiting.isEmpty)
                    return done ? nil : []
                }
                return group
            }
            guard let group = next else { break }
            guard !group.isEmpty else { continue }
            process(group[...])
            if index == 0 { maintainPartitionsIfDue() }
        }
        exit()
    }

    private func exit() {
        connection = nil
        let callbacks = core.state.withLock { state -> [@Sendable () -> Void] in
            state.runningWriters -= 1
            guard state.runningWriters == 0 else { return [] }
            state.phase = .stopped
            defer { state.onAllWritersExited = [] }
            return state.onAllWritersExited
        }
        callbacks.forEach { $0() }
    }

    // MARK: - Groups

    /// Commits `group` whatever it takes, then completes its batches. Nothing here fails or skips a batch
    /// (DESIGN §2: seq N+1 never commits while seq N is unresolved):
    /// - PostgreSQL refusing rows for their data → the group is retried at once in isolating mode, which
    ///   dead-letters exactly those rows (`GroupCommit`);
    /// - anything else → the writer stalls: it keeps the group, reports why (`WriterPool.stall`) and retries
    ///   with capped exponential backoff, for ever, until the pool is shut down and gives up (`abandon`).
    func process(_ group: ArraySlice<QueuedBatch>) {
        var state = GroupCommit.Attempts()
        var attempt = 0
        while true {
            if core.state.withLock({ $0.abandon }) {
                let outcomes = group.indices.map { position -> BatchOutcome in
                    state.committing[position - group.startIndex] != nil
                        ? .failed(Self.abandonedUnknownMessage) : .failed(Self.abandonedMessage)
                }
                endStall()
                finish(group, outcomes: outcomes, latency: nil)
                return
            }
            guard let connection = connectedOrNil(attempt: &attempt) else { continue }
            let started = DispatchTime.now()
            do {
                let outcomes = try GroupCommit(writer: self, group: Array(group), connection: connection)
                    .run(&state)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
                endStall()
                finish(group, outcomes: outcomes, latency: seconds)
                return
            } catch let refusal as GroupCommit.DataRefusal {
                // Not a stall: the data is at fault, and the next round isolates it. No backoff needed.
                rollbackOrDrop(connection, broken: !connection.isHealthy)
                state.isolating = true
                state.hint = refusal.hint
                logger.info(
                    "PostgreSQL refused rows of a group; isolating them",
                    metadata: ["batches": "\(group.count)", "error": "\(refusal.error)"])
            } catch {
                countError(error)
                // A fresh session for the retry: a demoted primary's connection stays read-only for ever,
                // and a multi-host URL (target_session_attrs=read-write) finds the new primary only on
                // reconnecting; for the other stalls a reconnect is cheap next to the backoff.
                dropConnection()
                stalled(by: error, attempt: attempt, batches: group.count)
                sleep(seconds: backoff.delay(attempt: attempt))
                attempt += 1
            }
        }
    }

    private static let abandonedMessage =
        "the writer pool shut down while PostgreSQL would not take this batch: it was not committed; resend it"
    private static let abandonedUnknownMessage =
        "the writer pool shut down before it could learn whether this batch committed (the connection broke "
        + "during COMMIT): resend it; if it did commit, the resend is acknowledged as a duplicate"

    // MARK: - Stalls

    /// Records why this writer is holding its group back; logs a warning per failure and, once the stall
    /// lasted `stallErrorAfter`, one error.
    private func stalled(by error: any Error, attempt: Int, batches: Int) {
        let (reason, sqlState) = Self.stallReason(error)
        let stall = core.state.withLock { state -> WriterStall in
            let since = state.writerStalls[index]?.since ?? Date()
            let stall = WriterStall(reason: reason, sqlState: sqlState, since: since, writer: index)
            state.writerStalls[index] = stall
            return stall
        }
        logger.warning(
            "group not committed; keeping it and retrying",
            metadata: ["batches": "\(batches)", "reason": "\(reason)", "attempt": "\(attempt)"])
        if !stallReported && stall.seconds >= configuration.stallErrorAfter {
            stallReported = true
            logger.error(
                "writer stalled: PostgreSQL has not taken its batches for \(Int(stall.seconds)) s; still retrying (credit is withheld meanwhile)",
                metadata: ["reason": "\(reason)", "sqlstate": "\(sqlState ?? "-")"])
        }
    }

    private func endStall() {
        let wasStalled = core.state.withLock { state -> Bool in
            defer { state.writerStalls[index] = nil }
            return state.writerStalls[index] != nil
        }
        if wasStalled { logger.info("writer no longer stalled: the group committed") }
        stallReported = false
    }

    /// A stall's reason for people and its SQLSTATE.
    static func stallReason(_ error: any Error) -> (String, String?) {
        switch error {
        case let error as PGError:
            return ("\(SQLStateClass.explanation(of: error.sqlState)): \(error)", error.sqlState)
        case let error as GroupCommit.StallError:
            return (error.reason, error.sqlState)
        case let error as StoreError:
            return ("\(error)", nil)
        default:
            return ("\(error)", nil)
        }
    }

    /// The live connection, or nil after a failed attempt to make one (having slept the backoff).
    private func connectedOrNil(attempt: inout Int) -> PGConnection? {
        if let connection, connection.isHealthy { return connection }
        connection = nil
        do {
            let fresh = try PGConnection(url: configuration.databaseURL, applicationName: configuration.applicationName)
            connection = fresh
            let reconnected = hadConnection
            hadConnection = true
            core.state.withLock { state in
                state.writerReachable[index] = true
                if reconnected { state.reconnects += 1 }
            }
            logger.info("connected to PostgreSQL")
            return fresh
        } catch {
            core.state.withLock { state in
                state.writerReachable[index] = false
            }
            countError(error)
            let delay = backoff.delay(attempt: attempt)
            stalled(by: error, attempt: attempt, batches: 0)
            sleep(seconds: delay)
            attempt += 1
            return nil
        }
    }

    func rollbackOrDrop(_ connection: PGConnection, broken: Bool) {
        if !broken && connection.isHealthy, (try? connection.execute("ROLLBACK")) != nil { return }
        self.connection = nil
    }

    /// Forgets the connection (it broke, or a test pretends it did).
    func dropConnection() { connection = nil }

    private func countError(_ error: any Error) {
        let label = SQLStateClass.metricLabel(of: error)
        core.state.withLock { state in
            state.writerErrors += 1
            state.writerErrorsByClass[label, default: 0] += 1
        }
    }

    private func finish(_ group: ArraySlice<QueuedBatch>, outcomes: [BatchOutcome], latency: Double?) {
        core.groupFinished(group, outcomes: outcomes, latency: latency)
        for (item, outcome) in zip(group, outcomes) { item.completion(outcome) }
    }

    /// Creates the rows of producers this writer has not seen yet (none: an empty string).
    func insertStatement(for producers: [ProducerID]) -> String {
        let unknown = producers.filter { !knownProducers.contains($0) }
        guard !unknown.isEmpty else { return "" }
        return "INSERT INTO producers (producer_id) VALUES \(unknown.map { "('\($0)')" }.joined(separator: ",")) "
            + "ON CONFLICT (producer_id) DO NOTHING;"
    }

    // MARK: - Partitions

    private func maintainPartitionsIfDue() {
        guard DispatchTime.now() >= nextPartitionCheck, let connection, connection.isHealthy else { return }
        do {
            let created = try Migrator.ensurePartitions(
                connection, daysBack: configuration.partitionDaysBack, daysAhead: configuration.partitionDaysAhead)
            if created > 0 { logger.info("created readings partitions", metadata: ["count": "\(created)"]) }
            nextPartitionCheck = Self.deadline(after: configuration.partitionMaintenanceInterval)
        } catch {
            logger.warning("could not create readings partitions; retrying in a minute", metadata: ["error": "\(error)"])
            nextPartitionCheck = Self.deadline(after: 60)
        }
    }

    // MARK: - Time

    private static func deadline(after seconds: Double) -> DispatchTime {
        .now() + .nanoseconds(Int(min(seconds, 1e9) * 1e9))
    }

    private func sleep(seconds: Double) {
        Thread.sleep(forTimeInterval: seconds)
    }
}
