import SluiceStore
import SluiceTestSupport
import Testing

/// Exactly once, for ever: a (producer, seq) is written at most once whatever is resent, and in order.
@Suite(.timeLimit(.minutes(3))) struct ExactlyOnceTests {
    @Test func theSameBatchSubmittedTwiceIsWrittenOnceAndTheSecondIsADuplicate() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_twice"))
        let pool = try await startedPool(url: url)
        let producer = ProducerID.random()
        let batch = WriteBatch(producer: producer, seq: 1, series: [makeSeries(device: "dev-1", count: 500, start: nowMicros())])
        #expect(await pool.submit(batch) == .committedWhole)
        #expect(await pool.submit(batch) == .duplicate(accepted: 500, rejected: 0))
        #expect(try await pool.committedSeq(of: producer) == 1)
        #expect(try await pool.committedSeq(of: .random()) == 0)
        let stats = pool.stats
        #expect(stats.committedBatches == 1 && stats.duplicateBatches == 1 && stats.failedBatches == 0)
        #expect(stats.inFlightReadings == 0 && stats.queuedReadings == 0 && stats.databaseReachable)
        #expect(stats.commitLatencyP50Seconds > 0 && stats.commitLatencyP99Seconds >= stats.commitLatencyP50Seconds)
        await pool.shutdown()
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 500)
    }

    @Test func aResendAfterThePoolRestartedIsADuplicate() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_restart_pool"))
        let producer = ProducerID.random()
        let batch = WriteBatch(producer: producer, seq: 7, series: [makeSeries(device: "dev-1", count: 100, start: nowMicros())])
        let first = try await startedPool(url: url)
        #expect(await first.submit(batch) == .committedWhole)
        await first.shutdown()
        let second = try await startedPool(url: url, writers: 3)  // another writer count: another mapping
        #expect(await second.submit(batch) == .duplicate(accepted: 100, rejected: 0))
        #expect(try await second.committedSeq(of: producer) == 7)
        await second.shutdown()
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 100)
    }

    @Test func anOldSeqAfterAMuchLaterOneIsADuplicate() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_far_seq"))
        let pool = try await startedPool(url: url)
        let producer = ProducerID.random()
        func batch(_ seq: UInt64) -> WriteBatch {
            WriteBatch(producer: producer, seq: seq, series: [makeSeries(device: "dev-\(seq)", count: 10, start: nowMicros())])
        }
        #expect(await pool.submit(batch(1)) == .committedWhole)
        #expect(await pool.submit(batch(5_000_000_000)) == .committedWhole)  // days of batches later
        #expect(await pool.submit(batch(5)) == .duplicate(accepted: 10, rejected: 0))
        #expect(await pool.submit(batch(5_000_000_001)) == .committedWhole)
        #expect(try await pool.committedSeq(of: producer) == 5_000_000_001)
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        #expect(try connection.scalar("SELECT count(*) FROM readings") == 30)
        #expect(try connection.scalar("SELECT count(*) FROM readings WHERE device_id = 'dev-5'") == 0)
    }

    @Test func aProducerRowDeletedByHandIsCreatedAgain() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_deleted_producer"))
        let pool = try await startedPool(url: url, writers: 1)
        let producer = ProducerID.random()
        func batch(_ seq: UInt64) -> WriteBatch {
            WriteBatch(producer: producer, seq: seq, series: [makeSeries(device: "dev-\(seq)", count: 3, start: nowMicros())])
        }
        #expect(await pool.submit(batch(1)) == .committedWhole)
        try TestConnection(url: url).query("DELETE FROM producers")
        #expect(await pool.submit(batch(2)) == .committedWhole)
        #expect(try await pool.committedSeq(of: producer) == 2)
        await pool.shutdown()
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 6)
    }

    @Test func aBatchQueuedTwiceInOneGroupIsWrittenOnce() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_same_group"))
        let pool = try await startedPool(url: url, writers: 1)
        let producer = ProducerID.random()
        let batch = WriteBatch(producer: producer, seq: 1, series: [makeSeries(device: "dev-1", count: 50, start: nowMicros())])
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(3)
        for _ in 0..<3 {
            pool.submit(batch) { log.record(producer, 1, $0); counter.done() }
        }
        #expect(await counter.wait(seconds: 30))
        #expect(log.all.map(\.outcome) == [.committedWhole, .duplicate(accepted: 50, rejected: 0), .duplicate(accepted: 50, rejected: 0)])
        await pool.shutdown()
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 50)
    }

    @Test func eachProducersBatchesCommitInSubmissionOrderUnderLoad() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_order"))
        let pool = try await startedPool(url: url, writers: 2, maxGroupReadings: 3_000)
        let producers = (0..<8).map { _ in ProducerID.random() }
        let log = OutcomeLog()
        let counter = CompletionCounter()
        let batchesEach = 60
        counter.expect(producers.count * batchesEach)
        let start = nowMicros()
        for seq in 1...UInt64(batchesEach) {
            for (index, producer) in producers.enumerated() {
                let series = makeSeries(device: "dev-\(index)", count: 250, start: start + Int64(seq) * 1_000_000)
                pool.submit(WriteBatch(producer: producer, seq: seq, series: [series])) { outcome in
                    log.record(producer, seq, outcome)
                    counter.done()
                }
            }
        }
        #expect(await counter.wait(seconds: 60))
        for producer in producers {
            let seen = log.all.filter { $0.producer == producer }
            #expect(seen.map(\.seq) == Array(1...UInt64(batchesEach)), "completions in submission order")
            #expect(seen.allSatisfy { $0.outcome == .committedWhole })
            #expect(try await pool.committedSeq(of: producer) == UInt64(batchesEach))
        }
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        #expect(try connection.scalar("SELECT count(*) FROM readings") == producers.count * batchesEach * 250)
        #expect(try connection.scalar("SELECT count(DISTINCT (device_id, time)) FROM readings") == producers.count * batchesEach * 250)
    }
}
