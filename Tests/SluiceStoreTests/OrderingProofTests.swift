import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceStore

/// DESIGN §2's promise under everything at once: refusals (a CHECK constraint added and dropped),
/// read-only stalls and killed connections, across several producers with many seqs. Afterwards every
/// reading is exactly once in `readings` or in `dead_letters`, each producer's high-water is its last seq,
/// every outcome arrived in seq order and none failed.
@Suite(.timeLimit(.minutes(5))) struct OrderingProofTests {
    @Test func everyReadingEndsUpExactlyOnceWhateverPostgreSQLDoesMeanwhile() async throws {
        let name = uniqueDatabaseName("store_ordering")
        let url = try await TestDatabase.freshDatabase(named: name)
        let application = uniqueApplicationName("order")
        let pool = try await startedPool(url: url, writers: 2, applicationName: application, maxGroupReadings: 400)
        let producers = (0..<4).map { _ in ProducerID.random() }
        let seqs = 60
        let perBatch = 20
        let start = nowMicros()
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(producers.count * seqs)

        // The disturbances run on their own connection, in steps between the submits, so every kind meets
        // batches in flight whatever the machine's speed; what is checked does not depend on the timing.
        let chaos = try TestConnection(url: url)
        var readOnlyStalls = 0
        func disturb(_ step: Int, seq: UInt64) async throws {
            switch step % 6 {
            case 0:
                // Negative readings already stored (from while the constraint was dropped) are older than
                // the cutoff, so the constraint can be added; every later one is refused.
                let cutoff = start + Int64(seq + 1) * 1_000_000
                try chaos.query(
                    """
                    ALTER TABLE readings ADD CONSTRAINT proof_nonnegative
                        CHECK (value >= 0 OR time < to_timestamp(\(cutoff)::float8 / 1000000))
                    """)
            case 1: try terminateBackends(of: application, via: chaos)
            case 2: try chaos.query("ALTER TABLE readings DROP CONSTRAINT proof_nonnegative")
            case 3:
                try chaos.query("ALTER DATABASE \(name) SET default_transaction_read_only = on")
                try terminateBackends(of: application, via: chaos)
            case 4:
                // The batches submitted since the database went read-only cannot commit: the writers must
                // be stalled on it (no guessing how long that takes: the pool says so).
                if try await stall(of: pool, sqlState: "25006") != nil { readOnlyStalls += 1 }
                try chaos.query("ALTER DATABASE \(name) RESET default_transaction_read_only")
            default: try terminateBackends(of: application, via: chaos)
            }
        }
        var step = 0
        for seq in 1...UInt64(seqs) {
            for (p, producer) in producers.enumerated() {
                // Every 5th reading is negative: refused while the constraint exists, stored otherwise.
                let values: [Double] = (0..<perBatch).map { (i: Int) -> Double in
                    let negative = (i + Int(seq) + p) % 5 == 0
                    return negative ? -1 - Double(i) : Double(i)
                }
                let times = (0..<perBatch).map { start + Int64(seq) * 1_000_000 + Int64($0) }
                let batch = WriteBatch(
                    producer: producer, seq: seq,
                    series: [RowSeries(deviceID: "proof-\(p)", metric: "m", times: times, values: values)])
                pool.submit(batch) { outcome in
                    log.record(producer, seq, outcome)
                    counter.done()
                }
            }
            if seq % 6 == 0 {
                try await disturb(step, seq: seq)
                step += 1
                try await Task.sleep(nanoseconds: 30_000_000)
            }
        }
        // End writable, so that everything can commit.
        try chaos.query("ALTER DATABASE \(name) RESET default_transaction_read_only")
        try terminateBackends(of: application, via: chaos)
        #expect(await counter.wait(seconds: 240), "every batch completes")
        let stats = pool.stats
        await pool.shutdown()

        let outcomes = log.all
        #expect(outcomes.count == producers.count * seqs)
        let notCommitted = outcomes.filter { !$0.outcome.isCommitted }.map { "\($0.seq): \($0.outcome)" }
        #expect(notCommitted.isEmpty, "\(notCommitted.prefix(3))")
        for producer in producers {
            #expect(outcomes.filter { $0.producer == producer }.map(\.seq) == Array(1...UInt64(seqs)), "in seq order")
        }
        #expect(stats.failedBatches == 0 && stats.duplicateBatches == 0)
        #expect(stats.writerErrors > 0, "the disturbances were met")

        let check = try TestConnection(url: url)
        let total = producers.count * seqs * perBatch
        let stored = try check.scalar("SELECT count(*) FROM readings")
        let dead = try check.scalar("SELECT count(*) FROM dead_letters")
        #expect(stored + dead == total, "\(stored) stored + \(dead) dead-lettered")
        #expect(dead == outcomes.reduce(0) { $0 + $1.outcome.refused.count }, "the outcomes tell what was dead-lettered")
        #expect(try check.scalar("SELECT count(*) FROM dead_letters WHERE reason_code <> 6 OR value >= 0") == 0)
        #expect(dead > 0, "the constraint refused readings")
        #expect(try check.scalar("SELECT count(*) FROM readings WHERE value < 0") > 0, "and was dropped for a while")
        #expect(readOnlyStalls == 1, "the read-only database stalled the writers")
        // Exactly once: no (device, time) twice, within or across the two tables.
        let distinct = try check.scalar(
            """
            SELECT count(*) FROM (
                SELECT device_id, (extract(epoch FROM time) * 1000000)::int8 FROM readings
                UNION SELECT device_id, time_us FROM dead_letters) AS everything
            """)
        #expect(distinct == total)
        #expect(try check.scalar("SELECT count(*) FROM producers WHERE committed_seq = \(seqs)") == producers.count)
    }
}
