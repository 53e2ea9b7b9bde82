import Foundation

/// One transaction committing one group of batches; `run` returns each batch's outcome once COMMIT succeeded.
///
/// BEGIN; lock (creating if new) the producers' rows and read their committed seqs; decide which batches are
/// new (`GroupPlan`); binary COPY of the new batches' rows into `readings`; COPY of their dead letters;
/// advance the producers' seqs; COMMIT.
///
/// Two modes:
/// - fast (first try): one COPY of every row, no savepoints. If PostgreSQL refuses a row for its data
///   (`SQLStateClass.aboutTheData`) the transaction is lost; `run` throws `DataRefusal` naming the row if
///   PostgreSQL did ("COPY readings, line N"), and the writer retries in isolating mode at once.
/// - isolating: the rows are copied in segments, each under a savepoint; a refused segment is rolled back to
///   its savepoint and split (`RowIsolation`) until every refused row is found. Those readings go to
///   `dead_letters` with PostgreSQL's message and SQLSTATE as reason (code 6, REJECT_CODE_DATABASE_REFUSED),
///   everything else to `readings`, all in the one transaction that advances the high-water.
///
/// Dead letters can be refused too (an operator's constraint or trigger on `dead_letters`; our own
/// encoding makes every field storable: NULs replaced, long text shortened). In isolating mode such a row
/// is stored again in a minimal form (device id, metric as length + hash, reason cut); if even that is
/// refused, `dead_letters` refuses whatever the reading is, which is not the reading's fault: the group
/// stalls (`StallError`) and is retried like a read-only database, so no reading is lost or misfiled.
///
/// A data error anywhere else (the producers statements, COMMIT: `SET CONSTRAINTS ALL IMMEDIATE` moves
/// deferred checks into the COPY where a row can be named) cannot be pinned on a reading: it stalls too.
struct GroupCommit {
    /// What one group's attempts remember from one try to the next (the group stays with its writer until
    /// it commits).
    struct Attempts {
        /// A previous try met refused rows: copy in segments from now on.
        var isolating = false
        /// The row the fast try's error named, and the error, to set aside without finding it again.
        var hint: (key: GroupRows.Key, error: PGError)?
        /// Batches (by position in the group) whose COMMIT was sent with them as new, and what was refused,
        /// until COMMIT's answer is known. A connection that breaks during COMMIT leaves that unknown; the
        /// retry then finds them committed — by this very COMMIT (once committed, later tries never write
        /// them again) — and reports them committed, not as duplicates.
        var committing: [Int: [RefusedReading]] = [:]
    }

    /// The fast try met a refusal of the data; the writer retries in isolating mode.
    struct DataRefusal: Error {
        var hint: (key: GroupRows.Key, error: PGError)?
        var error: PGError
    }

    /// A condition that is not about the data, found by the writer itself.
    struct StallError: Error, CustomStringConvertible {
        var reason: String
        var sqlState: String?
        var description: String { reason }
    }

    let writer: WriterThread
    let group: [QueuedBatch]
    let connection: PGConnection

    private var buffer: CopyBuffer { writer.buffer }

    func run(_ attempts: inout Attempts) throws -> [BatchOutcome] {
        // Sorted, so that concurrent writers (or daemons) lock producer rows in the same order: no deadlock.
        let producers = Set(group.map(\.batch.producer)).sorted()
        let idList = producers.map { "'\($0)'" }.joined(separator: ",")
        let begin = """
            BEGIN;
            SET CONSTRAINTS ALL IMMEDIATE;
            \(writer.insertStatement(for: producers))
            SELECT producer_id, committed_seq FROM producers WHERE producer_id IN (\(idList))
                ORDER BY producer_id FOR UPDATE;
            """
        let seriesCounts = group.map { $0.batch.series.map(\.count) }
        var plan: GroupPlan?
        var rows = GroupRows(seriesCounts: [], isNew: [])
        var refusedRows: [Int: PGError] = [:]

        if attempts.isolating {
            let decided = try decide(try connection.query(begin), producers: producers)
            plan = decided
            rows = GroupRows(seriesCounts: seriesCounts, isNew: decided.isNew)
            if let hint = attempts.hint, let row = rows.row(of: hint.key) { refusedRows[row] = hint.error }
            let found = try copySegmented(
                ReadingsCopyEncoder.copyStatement, table: "readings", savepoint: "sluice_rows", total: rows.total,
                excluding: Set(refusedRows.keys)
            ) { range, flush in try encodeReadings(range, of: rows, flush: flush) }
            refusedRows.merge(found) { first, _ in first }
        } else {
            var copyStarted = false
            do {
                try connection.copyIn(after: begin + ReadingsCopyEncoder.copyStatement) { result, sink in
                    let decided = try decide(result, producers: producers)
                    plan = decided
                    rows = GroupRows(seriesCounts: seriesCounts, isNew: decided.isNew)
                    copyStarted = true
                    try stream(0..<rows.total, to: sink) { range, flush in
                        try encodeReadings(range, of: rows, flush: flush)
                    }
                }
            } catch let error as PGError where copyStarted && error.classification == .aboutTheData {
                let line = error.copyLine(table: "readings")
                let hint = line.flatMap { $0 >= 1 && $0 <= rows.total ? (rows.key(of: $0 - 1), error) : nil }
                throw DataRefusal(hint: hint, error: error)
            }
        }
        guard let plan else {
            throw PGError(sqlState: nil, message: "the server did not open the COPY", connectionBroken: false)
        }

        // What each new batch had refused, and all dead letters of the group, in order.
        var refused: [Int: [RefusedReading]] = [:]
        for (row, error) in refusedRows.sorted(by: { $0.key < $1.key }) {
            let key = rows.key(of: row)
            let batch = group[key.batch].batch
            let before = batch.series[..<key.series].reduce(0) { $0 + $1.count }
            refused[key.batch, default: []].append(
                RefusedReading(
                    series: key.series, index: key.index, row: before + key.index, sqlState: error.sqlState,
                    reason: "PostgreSQL refused the reading: \(error)"))
        }
        var letters: [(batch: Int, letter: DeadLetter)] = []
        for (position, item) in group.enumerated() where plan.isNew[position] {
            for letter in item.batch.deadLetters { letters.append((position, letter)) }
            for refusal in refused[position] ?? [] {
                let series = item.batch.series[refusal.series]
                letters.append(
                    (position,
                     DeadLetter(
                        deviceID: series.deviceID, metric: series.metric, timeMicros: series.times[refusal.index],
                        value: series.values[refusal.index],
                        quality: series.quality.isEmpty ? 0 : series.quality[refusal.index],
                        reasonCode: databaseRefusedReasonCode, reason: refusal.reason)))
            }
        }
        if !letters.isEmpty { try writeDeadLetters(letters, isolating: attempts.isolating) }

        // Duplicates: the counts of their original outcome, in this transaction (one query for the group).
        let duplicates = plan.isNew.indices.filter { !plan.isNew[$0] && attempts.committing[$0] == nil }
        let deadLetterCounts = try DuplicateOutcome.deadLetterCounts(
            of: duplicates.map { (group[$0].batch.producer, group[$0].batch.seq) }, on: connection)

        for position in plan.isNew.indices where plan.isNew[position] {
            attempts.committing[position] = refused[position] ?? []
        }
        do {
            try commitAndAdvance(plan)
        } catch let error as PGError where !error.connectionBroken && connection.isHealthy {
            // PostgreSQL answered: nothing of this try committed.
            for position in plan.isNew.indices where plan.isNew[position] { attempts.committing[position] = nil }
            throw error
        }
        return plan.isNew.indices.map { position in
            if plan.isNew[position] { return .committed(refused: refused[position] ?? []) }
            if let earlier = attempts.committing[position] { return .committed(refused: earlier) }
            let batch = group[position].batch
            let rejected = deadLetterCounts[DuplicateOutcome.Key(producer: batch.producer, seq: batch.seq)] ?? 0
            return .duplicate(accepted: max(0, batch.readingCount - rejected), rejected: rejected)
        }
    }

    // MARK: - Steps

    /// The plan from the producers rows the transaction locked.
    private func decide(_ result: [[String?]], producers: [ProducerID]) throws -> GroupPlan {
        var committed: [ProducerID: UInt64] = [:]
        for row in result {
            guard let id = row[0].flatMap({ ProducerID(uuidString: $0) }), let seq = row[1].flatMap({ Int64($0) })
            else { continue }
            committed[id] = UInt64(bitPattern: seq)
        }
        guard committed.count == producers.count else {
            writer.knownProducers.removeAll()
            throw PGError(
                sqlState: "40001", message: "producers rows vanished during the group; retrying",
                connectionBroken: false)
        }
        if writer.knownProducers.count > 100_000 { writer.knownProducers.removeAll() }
        writer.knownProducers.formUnion(producers)
        return GroupPlan(batches: group.map { ($0.batch.producer, $0.batch.seq) }, committed: committed)
    }

    private func commitAndAdvance(_ plan: GroupPlan) throws {
        var statements = "COMMIT"
        if !plan.advanced.isEmpty {
            let values = plan.advanced.map { "('\($0.key)'::uuid, \(Int64(bitPattern: $0.value))::int8)" }
            statements = """
                UPDATE producers AS p SET committed_seq = v.seq, updated_at = now()
                FROM (VALUES \(values.joined(separator: ","))) AS v(id, seq) WHERE p.producer_id = v.id;
                COMMIT
                """
        }
        let tag = try connection.commandTag(statements)
        guard tag == "COMMIT" else {
            throw PGError(sqlState: nil, message: "COMMIT answered \(tag)", connectionBroken: false)
        }
        if writer.core.testing.withLock({ hooks in
            guard hooks.loseCommitReplies > 0 else { return false }
            hooks.loseCommitReplies -= 1
            return true
        }) {
            // Tests: what a connection breaking after COMMIT reached the server looks like to the writer.
            writer.dropConnection()
            throw PGError(sqlState: nil, message: "connection lost during COMMIT (test)", connectionBroken: true)
        }
    }

    /// The dead letters of the group. Fast: one COPY; refused → isolating mode. Isolating: in segments; a
    /// refused row is stored again in its minimal form; a minimal form refused stalls the group.
    private func writeDeadLetters(_ letters: [(batch: Int, letter: DeadLetter)], isolating: Bool) throws {
        let encode = { (list: [(batch: Int, letter: DeadLetter)]) in
            { (range: Range<Int>, flush: (CopyBuffer) throws -> Void) throws in
                for index in range {
                    let batch = group[list[index].batch].batch
                    DeadLetterCopyEncoder.encode(list[index].letter, producer: batch.producer, seq: batch.seq, into: buffer)
                    if buffer.count >= WriterThread.flushThreshold { try flush(buffer) }
                }
            }
        }
        guard isolating else {
            var copyStarted = false
            do {
                try connection.copyIn(DeadLetterCopyEncoder.copyStatement) { sink in
                    copyStarted = true
                    try stream(0..<letters.count, to: sink, encode(letters))
                }
            } catch let error as PGError where copyStarted && error.classification == .aboutTheData {
                throw DataRefusal(hint: nil, error: error)
            }
            return
        }
        let refused = try copySegmented(
            DeadLetterCopyEncoder.copyStatement, table: "dead_letters", savepoint: "sluice_dead",
            total: letters.count, excluding: [], encode(letters))
        guard !refused.isEmpty else { return }
        let minimal = refused.sorted { $0.key < $1.key }.map { row, error in
            (batch: letters[row].batch, letter: Self.minimalForm(of: letters[row].letter, refusedWith: error))
        }
        let refusedAgain = try copySegmented(
            DeadLetterCopyEncoder.copyStatement, table: "dead_letters", savepoint: "sluice_dead", total: minimal.count,
            excluding: [], encode(minimal))
        if let (_, error) = refusedAgain.first {
            throw StallError(
                reason: "dead_letters refuses rows even in minimal form, so refused readings cannot be kept: "
                    + "\(error) (check constraints and triggers on dead_letters)",
                sqlState: error.sqlState)
        }
    }

    /// What is stored when `dead_letters` refused a dead letter as it was: only the numbers, and hashes of
    /// the text fields, with why.
    static func minimalForm(of letter: DeadLetter, refusedWith error: PGError) -> DeadLetter {
        var minimal = letter
        minimal.deviceID = DeadLetterText.minimal(letter.deviceID)
        minimal.metric = DeadLetterText.minimal(letter.metric)
        let original = DeadLetterText.prefix(of: letter.reason, bytes: 500)
        minimal.reason = "\(original) [stored in minimal form: dead_letters refused the full row: \(error)]"
        return minimal
    }

    // MARK: - COPY in segments

    /// Copies rows `0..<total` except `excluding` in segments, each under `savepoint`, splitting refused
    /// segments as `RowIsolation` says; returns the refused rows with their errors. Errors that are not
    /// about the data end the transaction and are thrown.
    private func copySegmented(
        _ statement: String, table: String, savepoint: String, total: Int, excluding: Set<Int>,
        _ encode: (Range<Int>, (CopyBuffer) throws -> Void) throws -> Void
    ) throws -> [Int: PGError] {
        var refused: [Int: PGError] = [:]
        var pending = Array(RowIsolation.segments(total: total, excluding: excluding).reversed())
        var rounds = 0
        while let segment = pending.popLast() {
            rounds += 1
            guard rounds <= RowIsolation.maxRounds(rows: total) else {
                throw StallError(reason: "row isolation in \(table) did not converge after \(rounds) rounds", sqlState: nil)
            }
            var copyStarted = false
            do {
                try connection.copyIn(after: "SAVEPOINT \(savepoint); \(statement)") { _, sink in
                    copyStarted = true
                    try stream(segment, to: sink, encode)
                }
                try connection.execute("RELEASE SAVEPOINT \(savepoint)")
            } catch let error as PGError where copyStarted && error.classification == .aboutTheData {
                try connection.execute("ROLLBACK TO SAVEPOINT \(savepoint); RELEASE SAVEPOINT \(savepoint)")
                switch RowIsolation.split(segment, line: error.copyLine(table: table)) {
                case .refuse(let row, let then):
                    refused[row] = error
                    pending.append(contentsOf: then.reversed())
                case .bisect(let halves):
                    pending.append(contentsOf: halves.reversed())
                }
            }
        }
        return refused
    }

    /// Header, the rows of `range` (encoded by `encode`, flushed in chunks of `flushThreshold`), trailer.
    private func stream(
        _ range: Range<Int>, to sink: PGConnection.CopySink,
        _ encode: (Range<Int>, (CopyBuffer) throws -> Void) throws -> Void
    ) throws {
        buffer.removeAll()
        buffer.append(bytes: CopyBinaryFormat.header)
        try encode(range) { full in
            try sink.send(full.bytes)
            full.removeAll()
        }
        buffer.append(bytes: CopyBinaryFormat.trailer)
        try sink.send(buffer.bytes)
        buffer.removeAll()
    }

    private func encodeReadings(_ range: Range<Int>, of rows: GroupRows, flush: (CopyBuffer) throws -> Void) throws {
        for (span, part) in rows.pieces(of: range) {
            try writer.encoder.encode(
                group[span.batch].batch.series[span.series], rows: part, into: buffer,
                flushThreshold: WriterThread.flushThreshold, flush: flush)
        }
    }
}
