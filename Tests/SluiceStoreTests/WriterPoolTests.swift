import Foundation
import SluiceStore
import SluiceTestSupport
import Testing

/// The pool's behaviour against the real PostgreSQL: what gets stored, failures, queue bounds, shutdown.
@Suite(.timeLimit(.minutes(3))) struct WriterPoolTests {
    @Test func extremeValuesSurviveTheBinaryCopyBitForBit() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_edges"))
        let pool = try await startedPool(url: url)
        // PostgreSQL's range: 4713-01-01 BC (Julian day 0) to beyond the largest Unix Int64 microseconds.
        let earliest: Int64 = -210_866_803_200_000_000
        let times: [Int64] = [earliest, -1, 0, 1, -2_208_988_800_000_000 /* 1900 */, nowMicros(), .max]
        let values: [Double] = [0.0, -0.0, .leastNonzeroMagnitude, -Double.leastNormalMagnitude.nextDown,
                                .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 21.37]
        let device = String(repeating: "é", count: 20) + String(repeating: "🌡", count: 6)  // 64 bytes
        #expect(device.utf8.count == 64)
        let series = RowSeries(
            deviceID: device, metric: "temp.c", times: times, values: values,
            quality: [0, 1, UInt32(Int32.max), UInt32.max, 7, 8, 9], site: nil, unit: "°C", enrichmentPartial: true)
        #expect(await pool.submit(WriteBatch(producer: .random(), seq: 1, series: [series])) == .committedWhole)
        await pool.shutdown()

        let rows = try TestConnection(url: url).query(
            """
            SELECT encode(timestamptz_send(time), 'hex'), encode(float8send(value), 'hex'), quality, device_id,
                   octet_length(device_id), site IS NULL, unit, enrichment_partial
            FROM readings ORDER BY time
            """)
        #expect(rows.count == times.count)
        let expected = zip(times, zip(values, [Int32(0), 1, .max, -1, 7, 8, 9])).sorted { $0.0 < $1.0 }
        for (row, (time, (value, quality))) in zip(rows, expected) {
            #expect(row[0] == String(UInt64(bitPattern: time - 946_684_800_000_000), radix: 16).leftPadded(to: 16))
            #expect(row[1] == String(value.bitPattern, radix: 16).leftPadded(to: 16))
            #expect(row[2] == String(quality))
            #expect(row[3] == device && row[4] == "64" && row[5] == "t" && row[6] == "°C" && row[7] == "t")
        }
    }

    @Test func valuesPostgresRefusesAreDeadLetteredAndTheRestOfTheirBatchesCommit() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_refused"))
        let pool = try await startedPool(url: url, writers: 1)
        let blocker = ProducerID.random()
        let producer = ProducerID.random()
        let start = nowMicros()
        // Hold the blocker's producers row so the batches after it queue up and are taken as one group.
        #expect(await pool.submit(WriteBatch(producer: blocker, seq: 1, series: [])) == .committedWhole)
        let lock = try TestConnection(url: url)
        try lock.query("BEGIN; SELECT 1 FROM producers WHERE producer_id = '\(blocker)' FOR UPDATE")

        let log = OutcomeLog()
        let counter = CompletionCounter()
        var nulSeries = makeSeries(device: "nul\0byte", count: 3, start: start)
        nulSeries.quality = [0, 7, 0]
        let batches = [
            WriteBatch(producer: blocker, seq: 2, series: [makeSeries(device: "blocker", count: 10, start: start)]),
            WriteBatch(producer: producer, seq: 1, series: [makeSeries(device: "good-1", count: 10, start: start)]),
            WriteBatch(
                producer: producer, seq: 2,
                series: [makeSeries(device: "good-2", count: 4, start: start), nulSeries,
                         makeSeries(device: "good-2b", count: 2, start: start)]),
            WriteBatch(producer: producer, seq: 3, series: [makeSeries(device: "good-3", count: 10, start: start)]),
            WriteBatch(
                producer: producer, seq: 4,
                series: [RowSeries(deviceID: "far-past", metric: "m", times: [start, .min, start], values: [1, 2, 3])]),
            WriteBatch(producer: producer, seq: 5, series: [makeSeries(device: "good-5", count: 10, start: start)]),
        ]
        counter.expect(batches.count)
        for batch in batches {
            pool.submit(batch) { log.record(batch.producer, batch.seq, $0); counter.done() }
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        try lock.query("COMMIT")
        #expect(await counter.wait(seconds: 60))

        let outcomes = log.all
        #expect(outcomes.map(\.seq) == [2, 1, 2, 3, 4, 5])
        for index in [0, 1, 3, 5] { #expect(outcomes[index].outcome == .committedWhole) }
        let nul = outcomes[2].outcome.refused
        #expect(outcomes[2].outcome.isCommitted && nul.map(\.series) == [1, 1, 1] && nul.map(\.index) == [0, 1, 2])
        #expect(nul.map(\.row) == [4, 5, 6], "rows count across the batch's series")
        #expect(nul.allSatisfy { $0.reason.contains("0x00") && $0.sqlState?.hasPrefix("22") == true })
        let range = outcomes[4].outcome.refused
        #expect(range.count == 1 && range.first?.row == 1 && range.first?.reason.contains("out of range") == true)
        let stats = pool.stats
        #expect(stats.failedBatches == 0 && stats.refusedReadings == 4 && stats.stall == nil)
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        #expect(try connection.scalar("SELECT count(*) FROM readings") == 10 + 10 + 6 + 10 + 2 + 10)
        #expect(try connection.scalar("SELECT count(*) FROM dead_letters WHERE reason_code = 6") == 4)
        let letters = try connection.query(
            "SELECT seq, device_id, quality, time_us, reason FROM dead_letters ORDER BY seq, quality, time_us")
        #expect(letters.map { $0[0] } == ["2", "2", "2", "4"])
        #expect(letters.prefix(3).allSatisfy { $0[1] == "nul\u{FFFD}byte" } && letters[2][2] == "7")
        #expect(letters[3][1] == "far-past" && letters[3][3] == "\(Int64.min)")
        #expect(letters.allSatisfy { $0[4]?.contains("SQLSTATE") == true })
        #expect(try connection.scalar("SELECT min(committed_seq) FROM producers") == 2)
        #expect(try connection.scalar("SELECT max(committed_seq) FROM producers") == 5)
    }

    @Test func deadLettersAreWrittenWithTheirReasonsInTheBatchsTransaction() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_dead"))
        let pool = try await startedPool(url: url)
        let producer = ProducerID.random()
        let batch = WriteBatch(
            producer: producer, seq: 3, series: [makeSeries(device: "dev-1", count: 5, start: nowMicros())],
            deadLetters: [
                DeadLetter(deviceID: "dev-1", metric: "temperature", timeMicros: 123, value: .nan, quality: 1,
                           reasonCode: 1, reason: "value is NaN"),
                DeadLetter(deviceID: "bad device\0", metric: "x", timeMicros: -9, value: 2.5, reasonCode: 4,
                           reason: "device id has characters outside [A-Za-z0-9._:-]"),
            ])
        #expect(batch.readingCount == 7)
        #expect(await pool.submit(batch) == .committedWhole)
        #expect(await pool.submit(batch) == .duplicate(accepted: 5, rejected: 2), "a resend gets the counts of the first outcome")
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        let rows = try connection.query(
            """
            SELECT producer_id::text, seq, device_id, metric, time_us, value::text, quality, reason_code, reason
            FROM dead_letters ORDER BY reason_code
            """)
        #expect(rows.count == 2)
        #expect(rows.first == ["\(producer)", "3", "dev-1", "temperature", "123", "NaN", "1", "1", "value is NaN"])
        #expect(rows.last?[2] == "bad device\u{FFFD}" && rows.last?[4] == "-9" && rows.last?[7] == "4")
        // Same transaction: the rows and the dead letters carry the same creating transaction id.
        let transactions = try connection.query(
            "SELECT DISTINCT xmin::text FROM readings UNION SELECT DISTINCT xmin::text FROM dead_letters")
        #expect(transactions.count == 1)
    }

    @Test func malformedBatchesAndSubmitsAfterShutdownFailWithAClearMessage() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_malformed"))
        let pool = try await startedPool(url: url)
        let producer = ProducerID.random()
        let uneven = RowSeries(deviceID: "d", metric: "m", times: [1, 2, 3], values: [1])
        #expect(await pool.submit(WriteBatch(producer: producer, seq: 1, series: [uneven]))
            == .failed("series 0 (d/m) has 3 times but 1 values"))
        guard case .failed(let zero) = await pool.submit(WriteBatch(producer: producer, seq: 0, series: [])) else {
            Issue.record("seq 0 must fail")
            return
        }
        #expect(zero.contains("seqs start at 1"))
        await pool.shutdown()
        guard case .failed(let late) = await pool.submit(WriteBatch(producer: producer, seq: 1, series: [])) else {
            Issue.record("a submit after shutdown must fail")
            return
        }
        #expect(late.contains("shut down"))
    }

    @Test func startingAgainstAnUnreachableDatabaseThrowsAClearError() async throws {
        let port = PostgresCluster.init(dataDirectory: "/nonexistent", port: nil, logger: testLogger()).port
        let pool = WriterPool(
            configuration: .init(databaseURL: "postgresql://sluice@127.0.0.1:\(port)/postgres"), logger: testLogger())
        do {
            try await pool.start()
            Issue.record("start should have thrown")
        } catch let error as StoreError {
            guard case .unreachable(let message) = error else {
                Issue.record("expected .unreachable, got \(error)")
                return
            }
            #expect(message.contains("127.0.0.1:\(port)"))
        }
        await pool.shutdown()
    }

    @Test func shutdownCommitsEverythingQueuedBeforeReturning() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_drain"))
        let pool = try await startedPool(url: url, maxGroupReadings: 2_000)
        let log = OutcomeLog()
        let producers = (0..<4).map { _ in ProducerID.random() }
        let start = nowMicros()
        for seq in 1...UInt64(25) {
            for (index, producer) in producers.enumerated() {
                let series = makeSeries(device: "dev-\(index)", count: 400, start: start + Int64(seq) * 1_000_000)
                pool.submit(WriteBatch(producer: producer, seq: seq, series: [series])) { log.record(producer, seq, $0) }
            }
        }
        // Two callers shutting down at once (the daemon's drain and its service group): both return drained.
        let other = Task { await pool.shutdown() }
        await pool.shutdown()
        #expect(log.all.count == 100 && log.all.allSatisfy { $0.outcome == .committedWhole })
        await other.value
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 40_000)
    }

    @Test func asyncSubmitsWaitForRoomWhileCallbackSubmitsAreCountedOverCapacity() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_capacity"))
        let pool = try await startedPool(url: url, writers: 1, queueCapacity: 1_000)
        let producer = ProducerID.random()
        // Hold the producer's row so nothing commits while the queue fills.
        #expect(await pool.submit(WriteBatch(producer: producer, seq: 1, series: [])) == .committedWhole)
        let lock = try TestConnection(url: url)
        try lock.query("BEGIN; SELECT 1 FROM producers WHERE producer_id = '\(producer)' FOR UPDATE")
        let start = nowMicros()
        func batch(_ seq: UInt64) -> WriteBatch {
            WriteBatch(producer: producer, seq: seq, series: [makeSeries(device: "dev", count: 600, start: start + Int64(seq) * 1_000_000)])
        }
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(2)
        pool.submit(batch(2)) { log.record(producer, 2, $0); counter.done() }  // fits (600 of 1000)
        pool.submit(batch(3)) { log.record(producer, 3, $0); counter.done() }  // over capacity, admitted anyway
        let waiting = Task { await pool.submit(batch(4)) }  // must wait for room
        try await Task.sleep(nanoseconds: 200_000_000)
        var stats = pool.stats
        #expect(stats.overCapacitySubmissions == 1)
        #expect(stats.inFlightReadings == 1_800 && stats.queueCapacityReadings == 1_000)
        #expect(stats.queuedReadings >= 600)  // batch 4 waits outside the writer queues
        try lock.query("COMMIT")
        #expect(await waiting.value == .committedWhole)
        #expect(await counter.wait(seconds: 30))
        #expect(log.all.map(\.seq) == [2, 3])
        stats = pool.stats
        #expect(stats.inFlightReadings == 0 && stats.committedBatches == 4)
        await pool.shutdown()
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - count)) + self
    }
}
