import Foundation
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

@Suite struct IngestTests {
    @Test func handshakeWelcomesWithTheNegotiatedLimitsAndAFirstWindow() async throws {
        let server = try await TestServer.start(database: "srv_handshake")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(1))
        #expect(welcome.protocolVersion == 1)
        #expect(welcome.initialCredit == 50_000)
        #expect(welcome.maxFrameBytes == 4 << 20)
        #expect(welcome.maxDecompressedBytes == 32 << 20)
        // The validator's 65,536, capped at what one connection can be granted (the test server's max window).
        #expect(welcome.maxBatchReadings == 50_000)
        #expect(welcome.creditRequests)
        #expect(welcome.heartbeatIntervalMs == 5_000)
        #expect(welcome.committedSeq == 0)
        #expect(welcome.sessionID > 0)
        await client.close()
    }

    @Test func batchesAreAckedAfterCommitWithTheirCounts() async throws {
        let server = try await TestServer.start(database: "srv_acks")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(2))
        for seq in 1...5 as ClosedRange<UInt64> {
            try await client.sendBatch(Readings.batch(seq: seq, count: 100))
        }
        let acks = try await client.acks(for: Set(1...5))
        #expect(acks.values.allSatisfy { $0.accepted == 100 && $0.rejected == 0 && !$0.duplicate })
        // Ack means durable: the rows are there the moment the ack is.
        #expect(try server.readingRows == 500)
        #expect(try server.count("SELECT committed_seq FROM producers") == 5)
        await client.close()
    }

    @Test func resentBatchIsAckedAsDuplicateAndWrittenOnce() async throws {
        let server = try await TestServer.start(database: "srv_dup")
        defer { Task { await server.stop() } }
        let first = try await RawClient.connect(port: server.port)
        try await first.handshake(producer: producerID(3))
        try await first.sendBatch(Readings.batch(seq: 1, count: 10))
        try await first.sendBatch(Readings.batch(seq: 2, count: 10))
        _ = try await first.acks(for: [1, 2])
        await first.close()

        let again = try await RawClient.connect(port: server.port)
        let welcome = try await again.handshake(producer: producerID(3))
        #expect(welcome.committedSeq == 2)
        try await again.sendBatch(Readings.batch(seq: 2, count: 10))
        try await again.sendBatch(Readings.batch(seq: 3, count: 10))
        let acks = try await again.acks(for: [2, 3])
        #expect(acks[2]?.duplicate == true)
        #expect(acks[3]?.duplicate == false)
        #expect(try server.readingRows == 30)
        await again.close()
    }

    @Test func batchesFinishedOutOfOrderByThePipelineAreSubmittedAndAckedInSeqOrder() async throws {
        let server = try await TestServer.start(database: "srv_order") { $0.pipelineConcurrency = 4 }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(4))
        // A big compressed batch takes far longer to decompress and validate than the tiny ones behind it, so
        // the task group finishes them out of order; the re-sequencer must put them back.
        var expected: [UInt64: UInt32] = [:]
        for seq in 1...12 as ClosedRange<UInt64> {
            let size = seq % 4 == 1 ? 12_000 : 1
            expected[seq] = UInt32(size)
            try await client.sendBatch(Readings.batch(seq: seq, count: size), compressed: seq % 4 == 1)
        }
        var order: [UInt64] = []
        while order.count < 12 {
            guard let frame = try await client.next() else { break }
            if case .ack(let ack)? = frame.kind {
                order.append(ack.seq)
                #expect(ack.accepted == expected[ack.seq], "seq \(ack.seq)")
            }
        }
        #expect(order == Array(1...12))
        #expect(try server.readingRows == 3 * 12_000 + 9)
        await client.close()
    }

    @Test func enrichmentAppliesTheRegistryCalibration() async throws {
        let url = try await TestDatabase.freshDatabase(named: "srv_enrich")
        // The schema comes from the writer pool's migrations; start once to create it, add a device, restart.
        let first = try await TestServer.start(database: "srv_enrich")
        await first.stop()
        _ = url
        try TestConnection(url: first.databaseURL).query(
            "INSERT INTO devices (device_id, site, scale, \"offset\", unit) VALUES ('cal-1', 'hall-b', 2, 1, 'degC')")
        let server = try await TestServer.startReusing(databaseURL: first.databaseURL)
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(5))
        var builder = SeriesBuilder(deviceID: "cal-1", metric: "temp")
        builder.append(timeMicros: Readings.nowMicros - 1_000_000, value: 10)
        var plain = SeriesBuilder(deviceID: "unregistered", metric: "temp")
        plain.append(timeMicros: Readings.nowMicros - 1_000_000, value: 10)
        try await client.sendBatch(Readings.batch(seq: 1, series: [builder.build(), plain.build()]))
        _ = try await client.acks(for: [1])
        let rows = try TestConnection(url: server.databaseURL).query(
            "SELECT device_id, value, site, unit, enrichment_partial FROM readings ORDER BY device_id")
        #expect(rows == [["cal-1", "21", "hall-b", "degC", "f"], ["unregistered", "10", nil, nil, "f"]])
        await client.close()
    }

    /// A finite raw value that the calibration turns into ±infinity is dead-lettered with its raw value and
    /// reported in the ack under its index in the batch; the readings around it are written.
    @Test func aCalibrationThatOverflowsDeadLettersTheReading() async throws {
        let first = try await TestServer.start(database: "srv_enrich_overflow")
        await first.stop()
        try TestConnection(url: first.databaseURL).query(
            "INSERT INTO devices (device_id, scale) VALUES ('cal-huge', 1e300)")
        let server = try await TestServer.startReusing(databaseURL: first.databaseURL)
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(6))
        var plain = SeriesBuilder(deviceID: "plain", metric: "temp")
        plain.append(timeMicros: Readings.nowMicros - 3_000_000, value: .nan)  // index 0: rejected by validation
        plain.append(timeMicros: Readings.nowMicros - 2_000_000, value: 1)     // index 1
        var huge = SeriesBuilder(deviceID: "cal-huge", metric: "temp")
        huge.append(timeMicros: Readings.nowMicros - 2_000_000, value: 0.5)    // index 2: 5e299, written
        huge.append(timeMicros: Readings.nowMicros - 1_000_000, value: 1e10)   // index 3: overflows
        try await client.sendBatch(Readings.batch(seq: 1, series: [plain.build(), huge.build()]))
        let ack = try #require(try await client.acks(for: [1])[1])
        #expect(ack.accepted == 2 && ack.rejected == 2)
        #expect(ack.reasons.map(\.index) == [0, 3])
        #expect(ack.reasons.map(\.code) == [.valueNotFinite, .valueNotFinite])
        #expect(ack.reasons.last?.message.contains("calibrated") == true)
        let db = try TestConnection(url: server.databaseURL)
        #expect(try db.query("SELECT device_id FROM readings ORDER BY device_id") == [["cal-huge"], ["plain"]])
        #expect(try db.query("SELECT device_id, value, reason_code FROM dead_letters WHERE device_id = 'cal-huge'")
            == [["cal-huge", "10000000000", "1"]])
        await client.close()
    }
}
