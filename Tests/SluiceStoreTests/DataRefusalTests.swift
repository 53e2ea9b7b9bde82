import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceStore

/// Rows PostgreSQL refuses for their data are dead-lettered with its reason; the rest of the group commits,
/// in one transaction that advances the high-water; duplicates and lost COMMIT answers tell the truth.
@Suite(.timeLimit(.minutes(3))) struct DataRefusalTests {
    /// A series whose values are `values`, 1 ms apart.
    func series(_ device: String, _ values: [Double], start: Int64) -> RowSeries {
        RowSeries(
            deviceID: device, metric: "m", times: values.indices.map { start + Int64($0) * 1_000 }, values: values)
    }

    @Test func aCheckConstraintRefusesRowsAcrossTheBatchesOfOneGroup() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_check"))
        let pool = try await startedPool(url: url, writers: 1)
        let setup = try TestConnection(url: url)
        try setup.query("ALTER TABLE readings ADD CONSTRAINT readings_nonnegative CHECK (value >= 0)")
        let producer = ProducerID.random()
        let start = nowMicros()
        // Held back until all are queued, so the writer takes them as one group (behind the blocker's).
        try setup.query("BEGIN; LOCK TABLE producers IN EXCLUSIVE MODE")
        pool.submit(WriteBatch(producer: .random(), seq: 1, series: [])) { _ in }
        let batches = [
            WriteBatch(producer: producer, seq: 1, series: [series("a", [1, -1, 2, -2, -3], start: start)]),
            WriteBatch(producer: producer, seq: 2, series: [series("b", [1, 2], start: start)]),
            WriteBatch(
                producer: producer, seq: 3,
                series: [series("c", [-5], start: start), series("d", [0, 1, -1], start: start)],
                deadLetters: [DeadLetter(deviceID: "c", metric: "m", timeMicros: 1, value: .nan, reasonCode: 1, reason: "NaN")]),
        ]
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(batches.count)
        for batch in batches { pool.submit(batch) { log.record(producer, batch.seq, $0); counter.done() } }
        try await Task.sleep(nanoseconds: 100_000_000)
        try setup.query("COMMIT")
        #expect(await counter.wait(seconds: 60))
        let outcomes = log.all.map(\.outcome)
        #expect(outcomes.count == 3 && outcomes.allSatisfy(\.isCommitted))
        #expect(outcomes[0].refused.map(\.row) == [1, 3, 4])
        #expect(outcomes[1] == .committedWhole)
        #expect(outcomes[2].refused.map { [$0.series, $0.index, $0.row] } == [[0, 0, 0], [1, 2, 3]])
        #expect(outcomes.flatMap(\.refused).allSatisfy {
            $0.sqlState == "23514" && $0.reason.contains("readings_nonnegative") && $0.reason.contains("SQLSTATE 23514")
        })
        #expect(try await pool.committedSeq(of: producer) == 3)

        // Resends: duplicates with the original counts (PostgreSQL's refusals and validation's alike).
        #expect(await pool.submit(batches[0]) == .duplicate(accepted: 2, rejected: 3))
        #expect(await pool.submit(batches[1]) == .duplicate(accepted: 2, rejected: 0))
        #expect(await pool.submit(batches[2]) == .duplicate(accepted: 2, rejected: 3))
        await pool.shutdown()
        #expect(try setup.scalar("SELECT count(*) FROM readings") == 2 + 2 + 2)
        #expect(try setup.scalar("SELECT count(*) FROM readings WHERE value < 0") == 0)
        #expect(try setup.scalar("SELECT count(*) FROM dead_letters WHERE reason_code = 6 AND value < 0") == 5)
        #expect(try setup.scalar("SELECT count(*) FROM dead_letters") == 6)
    }

    @Test func triggersRaisingBeforeOrAfterTheRowAreIsolatedWithOrWithoutALine() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_trigger"))
        let pool = try await startedPool(url: url, writers: 1)
        let setup = try TestConnection(url: url)
        try setup.query(
            """
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.device_id LIKE TG_ARGV[0] || '%' THEN
                    RAISE EXCEPTION 'device % is not welcome', NEW.device_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_before BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION refuse('early');
            -- An AFTER ROW trigger fires at the end of the COPY: its error names no COPY line, so isolation
            -- falls back to halving.
            CREATE TRIGGER refuse_after AFTER INSERT ON readings FOR EACH ROW EXECUTE FUNCTION refuse('late');
            """)
        let start = nowMicros()
        let devices = ["ok-1", "early-1", "ok-2", "late-1", "ok-3", "late-2", "early-2", "ok-4"]
        let batch = WriteBatch(
            producer: .random(), seq: 1, series: devices.map { series($0, [1, 2, 3], start: start) })
        let outcome = await pool.submit(batch)
        #expect(outcome.isCommitted)
        let refusedSeries = Set(outcome.refused.map(\.series))
        #expect(refusedSeries == [1, 3, 5, 6] && outcome.refused.count == 12)
        #expect(outcome.refused.allSatisfy { $0.sqlState == "P0001" && $0.reason.contains("is not welcome") })
        await pool.shutdown()
        #expect(try setup.scalar("SELECT count(*) FROM readings") == 12)
        #expect(try setup.scalar("SELECT count(*) FROM readings WHERE device_id LIKE 'ok-%'") == 12)
        #expect(try setup.scalar("SELECT count(*) FROM dead_letters WHERE reason_code = 6") == 12)
        #expect(try setup.scalar("SELECT count(DISTINCT device_id) FROM dead_letters") == 4)
    }

    @Test func aCommitWhoseAnswerWasLostCountsAsCommittedNotAsADuplicate() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_lost_commit"))
        let pool = try await startedPool(url: url, writers: 1)
        let setup = try TestConnection(url: url)
        try setup.query("ALTER TABLE readings ADD CONSTRAINT readings_nonnegative CHECK (value >= 0)")
        pool.loseNextCommitReplies(1)
        let batch = WriteBatch(producer: .random(), seq: 1, series: [series("a", [1, -1, 2], start: nowMicros())])
        let outcome = await pool.submit(batch)
        #expect(outcome.isCommitted && outcome.refused.map(\.row) == [1], "\(outcome)")
        let stats = pool.stats
        #expect(stats.committedBatches == 1 && stats.duplicateBatches == 0 && stats.refusedReadings == 1)
        #expect(stats.writerErrors >= 1, "the lost answer was noticed")
        #expect(await pool.submit(batch) == .duplicate(accepted: 2, rejected: 1))
        await pool.shutdown()
        #expect(try setup.scalar("SELECT count(*) FROM readings") == 2)
        #expect(try setup.scalar("SELECT count(*) FROM dead_letters") == 1)
    }

    @Test func manyAndHugeDeadLettersAreStreamedAndStoredShort() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_big_dead"))
        let pool = try await startedPool(url: url, writers: 1)
        let huge = String(repeating: "x", count: 3_000_000)
        var letters = (0..<40_000).map {
            DeadLetter(deviceID: "dev-\($0)", metric: "m", timeMicros: Int64($0), value: 1, reasonCode: 2, reason: "old")
        }
        letters.append(DeadLetter(deviceID: huge, metric: huge + "m", timeMicros: 0, value: 1, reasonCode: 4, reason: huge))
        let batch = WriteBatch(producer: .random(), seq: 1, series: [], deadLetters: letters)
        #expect(await pool.submit(batch) == .committedWhole)
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        #expect(try connection.scalar("SELECT count(*) FROM dead_letters") == 40_001)
        let row = try connection.query(
            "SELECT octet_length(device_id), octet_length(metric), octet_length(reason), device_id FROM dead_letters WHERE reason_code = 4")
        #expect(row.count == 1)
        #expect((Int(row[0][0] ?? "") ?? 99) <= 64 && (Int(row[0][1] ?? "") ?? 99) <= 64)
        #expect((Int(row[0][2] ?? "") ?? 9_999) <= DeadLetterText.maxReasonBytes)
        #expect(row[0][3]?.contains("3000000 B") == true)
    }

    @Test func deadLettersRefusedByAnOperatorsConstraintAreKeptInMinimalForm() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_dead_refused"))
        let pool = try await startedPool(url: url, writers: 1)
        let setup = try TestConnection(url: url)
        try setup.query("ALTER TABLE dead_letters ADD CONSTRAINT short_reason CHECK (device_id NOT LIKE 'forbidden%')")
        let batch = WriteBatch(
            producer: .random(), seq: 1, series: [series("a", [1], start: nowMicros())],
            deadLetters: [
                DeadLetter(deviceID: "forbidden-1", metric: "m", timeMicros: 5, value: 1, reasonCode: 1, reason: "NaN"),
                DeadLetter(deviceID: "fine", metric: "m", timeMicros: 6, value: 1, reasonCode: 1, reason: "NaN"),
            ])
        #expect(await pool.submit(batch) == .committedWhole)
        await pool.shutdown()
        let rows = try setup.query("SELECT device_id, reason FROM dead_letters ORDER BY time_us")
        #expect(rows.count == 2)
        #expect(rows[0][0]?.hasPrefix("h:11:") == true && rows[0][1]?.contains("minimal form") == true)
        #expect(rows[1] == ["fine", "NaN"])
        #expect(try setup.scalar("SELECT count(*) FROM readings") == 1)
    }
}
