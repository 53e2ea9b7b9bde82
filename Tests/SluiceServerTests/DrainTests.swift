import Foundation
import NIOConcurrencyHelpers
import SluiceProtocol
import SluiceTestSupport
import Testing

/// SIGTERM of the real daemon while a client streams: the drain acks what it can, nothing acked is lost,
/// and what was not acked lands exactly once after the client reconnects and resends.
@Suite struct DrainTests {
    @Test func sigtermWhileStreamingKeepsEveryAckedReadingAndResentOnesLandOnce() async throws {
        let url = try await TestDatabase.freshDatabase(named: "srv_sigterm")
        let arguments = ["--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--drain-timeout", "10"]
        let (daemon, port) = try await SluicedProcess.start(arguments)
        defer { daemon.kill() }

        let producer = producerID(80)
        let size = 200
        let client = try await RawClient.connect(port: port)
        try await client.handshake(producer: producer)
        var sent: [UInt64] = []
        var signalled = false
        var goAway = false
        var seq: UInt64 = 1
        let began = ContinuousClock.now
        // Stream flat out; half a second in, SIGTERM the daemon and keep streaming until GoAway says stop.
        while !goAway {
            if !signalled && ContinuousClock.now - began > .milliseconds(500) {
                daemon.signal(SIGTERM)
                signalled = true
            }
            if client.held.withLockedValue({ $0 }) >= size {
                // Counted as sent even if the write fails: the server may have closed right after its last
                // ack, and a client cannot know whether the batch got there, so it resends it later.
                sent.append(seq)
                seq += 1
                do {
                    try await client.sendBatch(Readings.batch(seq: seq - 1, device: "drain", count: size))
                } catch {
                    break
                }
            }
            let frame: ServerFrame?
            do {
                frame = try await client.next(timeout: .milliseconds(signalled ? 10_000 : 5))
            } catch {
                continue  // nothing arrived within 5 ms: send more
            }
            guard let frame else { break }
            if case .goAway = frame.kind { goAway = true }
        }
        // After GoAway: wait for the last acks; the daemon closes once it has sent them.
        let rest = try await client.framesUntilClosed(timeout: .seconds(15))
        goAway = goAway || rest.contains { if case .goAway = $0.kind { true } else { false } }
        #expect(goAway, "the daemon said GoAway before closing")
        #expect(try await daemon.waitForExit() == 0, "sluiced exits 0 after draining: \(daemon.log.suffix(2_000))")
        #expect(daemon.log.contains("draining"))

        let acked = client.seenAcks.withLockedValue { Set($0.keys) }
        #expect(!acked.isEmpty)
        let db = try TestConnection(url: url)
        let stored = try db.scalar("SELECT count(*) FROM readings WHERE device_id = 'drain'")
        #expect(stored >= acked.count * size, "every acked reading is in the table")

        // Restart, reconnect, resend everything not acked: each lands exactly once.
        let (again, port2) = try await SluicedProcess.start(arguments)
        defer { again.kill() }
        let resumed = try await RawClient.connect(port: port2)
        let welcome = try await resumed.handshake(producer: producer)
        #expect(welcome.committedSeq >= acked.max() ?? 0)
        // A client that lost the last acks in the shutdown resends those batches too: they must be duplicates.
        let lostAcks = Array(acked.sorted().suffix(2))
        let unacked = sent.filter { !acked.contains($0) }
        for s in lostAcks + unacked {
            while resumed.held.withLockedValue({ $0 }) < size { _ = try await resumed.next() }
            try await resumed.sendBatch(Readings.batch(seq: s, device: "drain", count: size))
        }
        let extra = (seq..<seq + 3).map { $0 }
        for s in extra {
            while resumed.held.withLockedValue({ $0 }) < size { _ = try await resumed.next() }
            try await resumed.sendBatch(Readings.batch(seq: s, device: "drain", count: size))
        }
        let acks = try await resumed.acks(for: Set(lostAcks + unacked + extra))
        #expect(lostAcks.allSatisfy { acks[$0]?.duplicate == true })
        #expect(extra.allSatisfy { acks[$0]?.duplicate == false })
        await resumed.close()
        again.signal(SIGTERM)
        #expect(try await again.waitForExit() == 0)

        let total = (sent.count + extra.count) * size
        #expect(try db.scalar("SELECT count(*) FROM readings WHERE device_id = 'drain'") == total)
        #expect(try db.scalar("SELECT count(*) FROM (SELECT DISTINCT time FROM readings WHERE device_id = 'drain') AS d") == total)
    }
}
