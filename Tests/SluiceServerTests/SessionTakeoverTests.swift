import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

@Suite struct SessionTakeoverTests {
    @Test func newSessionForTheSameProducerTakesOverAndNothingIsWrittenTwice() async throws {
        let server = try await TestServer.start(database: "srv_takeover")
        defer { Task { await server.stop() } }
        // Small batches: a session's first window can be small (64 readings when the old session still holds
        // the slice of the budget for connections not seen busy), and clients size batches to their credit.
        let size = 50
        let old = try await RawClient.connect(port: server.port)
        try await old.handshake(producer: producerID(60))
        for seq in 1...10 as ClosedRange<UInt64> {
            try await old.sendBatch(Readings.batch(seq: seq, count: size))
        }
        _ = try await old.acks(for: [1, 2, 3])
        let ackedByOld = old.seenAcks.withLockedValue { Set($0.keys) }

        // The same producer reconnects (say, after a network blip the old socket never noticed).
        let new = try await RawClient.connect(port: server.port)
        let welcome = try await new.handshake(producer: producerID(60))
        let oldFrames = try await old.framesUntilClosed()
        let goAway = oldFrames.compactMap { if case .goAway(let g)? = $0.kind { g } else { nil } }.first
        #expect(goAway?.reason == "session replaced by a newer one for the same producer")
        #expect(!old.isOpen)

        // The client resends everything the old session did not see acked, then goes on.
        let ackedNow = ackedByOld.union(old.seenAcks.withLockedValue { Set($0.keys) })
        let resend = (1...10 as ClosedRange<UInt64>).filter { !ackedNow.contains($0) && $0 > welcome.committedSeq }
        for seq in resend { try await new.sendBatchWhenCredit(Readings.batch(seq: seq, count: size)) }
        for seq in 11...15 as ClosedRange<UInt64> { try await new.sendBatchWhenCredit(Readings.batch(seq: seq, count: size)) }
        _ = try await new.acks(for: Set(resend + Array(11...15)))

        #expect(try server.readingRows == 15 * size)
        #expect(try server.count("SELECT count(*) FROM (SELECT DISTINCT device_id, metric, time FROM readings) AS d") == 15 * size)
        #expect(try server.count("SELECT committed_seq FROM producers") == 15)
        await new.close()
    }
}
