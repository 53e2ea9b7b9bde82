import Dispatch
import Foundation
import Logging

/// One writer: a thread that owns a libpq connection and commits its queue's batches in groups.
///
/// Everything here runs on that thread; only `PoolCore` is shared. Per group: BEGIN; upsert and lock the
/// producers' rows to learn their committed seqs; decide which batches are new (`GroupPlan`); one binary COPY
/// of all new rows into `readings`; one of their dead letters; advance the producers' seqs; COMMIT; then —
/// only then — the completions.
final class WriterThread {
    private let index: Int
    private let core: PoolCore
    private let logger: Logger
    private var connection: PGConnection?
    private let encoder = ReadingsCopyEncoder()
    private let buffer = CopyBuffer(capacity: 1 << 20)
    private let backoff: Backoff
    private var nextPartitionCheck: DispatchTime
    private var hadConnection = false
    /// Producers whose `producers` row this writer has seen: their INSERT ... ON CONFLICT can be skipped.
    /// Only an optimisation: a row found missing (deleted by hand) drops the cache and retries the group.
    private var knownProducers = Set<ProducerID>()

    /// Bytes handed to PQputCopyData at a time: large, so a COPY costs few calls.
    private static let flushThreshold = 512 * 1024

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

    private var configuration: WriterPool.Configuration { core.configuration }

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

    /// Commits `group` (retrying transient failures for as long as it takes), then completes its batches.
    /// When PostgreSQL refuses the group's data, the group is split in halves, recursively, so that only the
    /// offending batch fails.
    private func process(_ group: ArraySlice<QueuedBatch>) {
        var attempt = 0
        while true {
            if core.state.withLock({ $0.abandon }) {
                finish(group, outcomes: group.map { _ in .failed(Self.abandonedMessage) }, latency: nil)
                return
            }
            guard let connection = connectedOrNil(attempt: &attempt) else { continue }
            let started = DispatchTime.now()
            do {
                let outcomes = try commit(group, on: connection)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
                finish(group, outcomes: outcomes, latency: seconds)
                return
            } catch let error as PGError where error.isTransient {
                countError()
                logger.warning(
                    "group of \(group.count) batches not committed, retrying",
                    metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                rollbackOrDrop(connection, broken: error.connectionBroken)
                sleep(seconds: backoff.delay(attempt: attempt))
                attempt += 1
            } catch {
                countError()
                rollbackOrDrop(connection, broken: !connection.isHealthy)
                if group.count == 1, let only = group.first {
                    let message = "PostgreSQL refused batch seq \(only.batch.seq) of producer \(only.batch.producer): \(error)"
                    logger.error(
                        "batch failed",
                        metadata: ["producer": "\(only.batch.producer)", "seq": "\(only.batch.seq)", "error": "\(error)"])
                    finish(group, outcomes: [.failed(message)], latency: nil)
                    return
                }
                // Isolate the batch PostgreSQL refuses: halves keep the order and need log2(n) rounds.
                let middle = group.startIndex + group.count / 2
                process(group[..<middle])
                process(group[middle...])
                return
            }
        }
    }

    private static let abandonedMessage =
        "the writer pool shut down while PostgreSQL was unreachable: this batch was not committed; resend it"

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
                state.writerErrors += 1
            }
            let delay = backoff.delay(attempt: attempt)
            logger.warning(
                "cannot connect to PostgreSQL, retrying",
                metadata: ["error": "\(error)", "retry_in_seconds": "\(delay)"])
            sleep(seconds: delay)
            attempt += 1
            return nil
        }
    }

    private func rollbackOrDrop(_ connection: PGConnection, broken: Bool) {
        if !broken && connection.isHealthy, (try? connection.execute("ROLLBACK")) != nil { return }
        self.connection = nil
    }

    private func countError() { core.state.withLock { $0.writerErrors += 1 } }

    private func finish(_ group: ArraySlice<QueuedBatch>, outcomes: [BatchOutcome], latency: Double?) {
        core.groupFinished(group, outcomes: outcomes, latency: latency)
        for (item, outcome) in zip(group, outcomes) { item.completion(outcome) }
    }

    /// One transaction for the whole group; returns each batch's outcome once COMMIT succeeded.
    private func commit(_ group: ArraySlice<QueuedBatch>, on connection: PGConnection) throws -> [BatchOutcome] {
        // Sorted, so that concurrent writers (or daemons) lock producer rows in the same order: no deadlock.
        let producers = Set(group.map(\.batch.producer)).sorted()
        let idList = producers.map { "'\($0)'" }.joined(separator: ",")
        // One round trip: lock (creating if new) the producers' rows, read their committed seqs, and open
        // the COPY; only the batches found new are then streamed.
        var plan: GroupPlan?
        var newBatches: [WriteBatch] = []
        try connection.copyIn(
            after: """
                BEGIN;
                \(insertStatement(for: producers))
                SELECT producer_id, committed_seq FROM producers WHERE producer_id IN (\(idList))
                    ORDER BY producer_id FOR UPDATE;
                \(ReadingsCopyEncoder.copyStatement)
                """
        ) { rows, sink in
            var committed: [ProducerID: UInt64] = [:]
            for row in rows {
                guard let id = row[0].flatMap({ ProducerID(uuidString: $0) }), let seq = row[1].flatMap({ Int64($0) })
                else { continue }
                committed[id] = UInt64(bitPattern: seq)
            }
            guard committed.count == producers.count else {
                knownProducers.removeAll()
                throw PGError(
                    sqlState: "40001", message: "producers rows vanished during the group; retrying",
                    connectionBroken: false)
            }
            if knownProducers.count > 100_000 { knownProducers.removeAll() }
            knownProducers.formUnion(producers)
            let decided = GroupPlan(batches: group.map { ($0.batch.producer, $0.batch.seq) }, committed: committed)
            plan = decided
            newBatches = zip(group, decided.isNew).filter(\.1).map(\.0.batch)
            buffer.removeAll()
            buffer.append(bytes: CopyBinaryFormat.header)
            for batch in newBatches {
                for series in batch.series {
                    try encoder.encode(series, into: buffer, flushThreshold: Self.flushThreshold) { full in
                        try sink.send(full.bytes)
                        full.removeAll()
                    }
                }
            }
            buffer.append(bytes: CopyBinaryFormat.trailer)
            try sink.send(buffer.bytes)
            buffer.removeAll()
        }
        guard let plan else {
            throw PGError(sqlState: nil, message: "the server did not open the COPY", connectionBroken: false)
        }
        if newBatches.contains(where: { !$0.deadLetters.isEmpty }) {
            try connection.copyIn(DeadLetterCopyEncoder.copyStatement) { sink in
                buffer.removeAll()
                buffer.append(bytes: CopyBinaryFormat.header)
                for batch in newBatches { DeadLetterCopyEncoder.encode(batch, into: buffer) }
                buffer.append(bytes: CopyBinaryFormat.trailer)
                try sink.send(buffer.bytes)
                buffer.removeAll()
            }
        }
        var finalStatements = "COMMIT"
        if !plan.advanced.isEmpty {
            let values = plan.advanced.map { "('\($0.key)'::uuid, \(Int64(bitPattern: $0.value))::int8)" }
            finalStatements = """
                UPDATE producers AS p SET committed_seq = v.seq, updated_at = now()
                FROM (VALUES \(values.joined(separator: ","))) AS v(id, seq) WHERE p.producer_id = v.id;
                COMMIT
                """
        }
        let tag = try connection.commandTag(finalStatements)
        guard tag == "COMMIT" else {
            throw PGError(sqlState: nil, message: "COMMIT answered \(tag)", connectionBroken: false)
        }
        return plan.isNew.map { $0 ? .committed : .duplicate }
    }

    /// Creates the rows of producers this writer has not seen yet (none: an empty string).
    private func insertStatement(for producers: [ProducerID]) -> String {
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
