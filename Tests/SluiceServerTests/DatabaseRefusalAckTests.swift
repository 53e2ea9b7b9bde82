import Foundation
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// Acks tell the truth when PostgreSQL refuses readings (issue 14): they count as rejected, with code
/// DATABASE_REFUSED (6) at their index in the client's batch, and a resend's duplicate ack carries the same counts.
@Suite(.timeLimit(.minutes(3))) struct DatabaseRefusalAckTests {
    @Test func readingsPostgresRefusesAreCountedAsRejectedAtTheirIndex() async throws {
        let server = try await TestServer.start(database: "srv_db_refused_\(UInt32.random(in: 0 ... .max))")
        defer { Task { await server.stop() } }
        try TestConnection(url: server.databaseURL).query(
            "ALTER TABLE readings ADD CONSTRAINT readings_nonnegative CHECK (value >= 0)")
        let base = Readings.nowMicros - 60_000_000
        var a = SeriesBuilder(deviceID: "dev-a", metric: "temp", reservingCapacity: 4)
        for (i, value) in [1, Double.nan, -5, 2].enumerated() { a.append(timeMicros: base + Int64(i), value: value) }
        var b = SeriesBuilder(deviceID: "dev-b", metric: "temp", reservingCapacity: 2)
        for (i, value) in [-1.0, 3].enumerated() { b.append(timeMicros: base + Int64(i), value: value) }
        let batch = Readings.batch(seq: 1, series: [a.build(), b.build()])

        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(61))
        try await client.sendBatch(batch)
        let ack = try #require(try await client.acks(for: [1])[1])
        #expect(ack.accepted == 3 && ack.rejected == 3 && !ack.duplicate)
        #expect(ack.reasons.map(\.index) == [1, 2, 4])
        #expect(ack.reasons.map(\.code) == [.valueNotFinite, .databaseRefused, .databaseRefused])
        #expect(ack.reasons[1].message.contains("readings_nonnegative"))
        await client.close()

        let again = try await RawClient.connect(port: server.port)
        try await again.handshake(producer: producerID(61))
        try await again.sendBatch(batch)
        let duplicate = try #require(try await again.acks(for: [1])[1])
        #expect(duplicate.duplicate && duplicate.accepted == 3 && duplicate.rejected == 3)
        await again.close()
        #expect(try server.readingRows == 3)
        #expect(try server.count("SELECT count(*) FROM dead_letters WHERE reason_code = 6") == 2)
    }
}
