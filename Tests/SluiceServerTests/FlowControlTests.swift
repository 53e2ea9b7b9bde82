import NIOConcurrencyHelpers
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// Credit for real: a slow database stops credit instead of refusing anyone, and a busy producer cannot
/// starve a quiet one.
@Suite struct FlowControlTests {
    /// Sends `size`-reading batches while credit lasts; returns the next seq once credit has been gone for
    /// `quiet` (reading, and answering, whatever the server sends meanwhile).
    func sendUntilCreditStops(
        _ client: RawClient, from seq: UInt64, size: Int, quiet: Duration, atMost: Int = 1_000
    ) async throws -> UInt64 {
        let first = seq
        var seq = seq
        var lastProgress = ContinuousClock.now
        while ContinuousClock.now - lastProgress < quiet && seq - first < atMost {
            if client.held.withLockedValue({ $0 }) >= size {
                try await client.sendBatch(Readings.batch(seq: seq, count: size))
                seq += 1
                lastProgress = .now
            } else {
                _ = try? await client.next(timeout: .milliseconds(50))
            }
        }
        return seq
    }

    @Test func lockedReadingsTableStopsCreditWithinOneWindowThenEverythingCommits() async throws {
        let server = try await TestServer.start(database: "srv_flow_lock") { config in
            config.flow = .init(
                budget: 20_000, maxWindow: 4_000, initialWindow: 4_000, queueHighWater: 1_000_000, queueLowWater: 500_000)
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(30))
        #expect(welcome.initialCredit == 4_000)

        // Another session holds the table: COPY into readings blocks, nothing commits.
        let blocker = try TestConnection(url: server.databaseURL)
        try blocker.query("BEGIN")
        try blocker.query("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")

        var next = try await sendUntilCreditStops(client, from: 1, size: 500, quiet: .milliseconds(1_500))
        let sentWhileLocked = Int(next - 1) * 500
        #expect(sentWhileLocked <= 4_000, "credit stops within one window (sent \(sentWhileLocked))")
        #expect(sentWhileLocked >= 3_500, "the window itself was usable")
        #expect(client.seenAcks.withLockedValue { $0.isEmpty }, "nothing acked while nothing committed")

        // Nobody is refused or disconnected meanwhile: a second producer still gets in and gets a window.
        let second = try await RawClient.connect(port: server.port)
        let secondWelcome = try await second.handshake(producer: producerID(31))
        #expect(secondWelcome.initialCredit > 0)
        var ping = Ping()
        ping.nonce = 99
        try await client.send(ClientFrame(.ping(ping)))
        let (pong, _) = try await client.read(until: { if case .pong = $0.kind { true } else { false } })
        #expect(pong != nil && client.isOpen)

        try blocker.query("COMMIT")
        _ = try await client.acks(for: Set(1..<next))
        // Credit flows again: two more windows' worth goes through.
        next = try await sendUntilCreditStops(client, from: next, size: 500, quiet: .seconds(5), atMost: 16)
        _ = try await client.acks(for: Set(1..<next))
        #expect(try server.readingRows == Int(next - 1) * 500)
        #expect(client.seenErrors.withLockedValue { $0.isEmpty })
        await client.close()
        await second.close()
    }

    @Test func flatOutProducerDoesNotStarveASlowOne() async throws {
        let server = try await TestServer.start(database: "srv_fair") { config in
            config.flow = .init(budget: 8_000, maxWindow: 8_000, initialWindow: 8_000)
        }
        defer { Task { await server.stop() } }
        let fast = try await RawClient.connect(port: server.port)
        try await fast.handshake(producer: producerID(40))
        let stop = ManagedFlag()
        let fastTask = Task {
            var seq: UInt64 = 1
            while !stop.isSet {
                if fast.held.withLockedValue({ $0 }) >= 1_000 {
                    try await fast.sendBatch(Readings.batch(seq: seq, device: "fast", count: 1_000))
                    seq += 1
                } else {
                    _ = try? await fast.next(timeout: .milliseconds(20))
                }
            }
            return seq - 1
        }
        try await Task.sleep(for: .milliseconds(300))  // the fast producer holds the whole budget by now

        let slow = try await RawClient.connect(port: server.port)
        try await slow.handshake(producer: producerID(41))
        // Like every real client, the slow producer sends what its credit covers (a newcomer's first window
        // can be small while the fast one holds the budget; it grows as the newcomer uses it).
        var longestWait = Duration.zero
        var slowSent = 0
        var seq: UInt64 = 0
        while slowSent < 1_000 {
            let began = ContinuousClock.now
            while slow.held.withLockedValue({ $0 }) < 1 {
                _ = try await slow.next(timeout: .seconds(5))
            }
            longestWait = max(longestWait, .now - began)
            let count = min(slow.held.withLockedValue { $0 }, 100, 1_000 - slowSent)
            seq += 1
            try await slow.sendBatch(Readings.batch(seq: seq, device: "slow", count: count))
            slowSent += count
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = try await slow.acks(for: Set(1...seq))
        stop.set()
        let fastBatches = try await fastTask.value
        #expect(longestWait < .seconds(2), "the slow producer waited \(longestWait) for credit")
        #expect(fastBatches > 10, "the fast producer kept streaming")
        #expect(try server.count("SELECT count(*) FROM readings WHERE device_id = 'slow'") == 1_000)
        await fast.close()
        await slow.close()
    }
}

/// A flag one task sets and another polls.
final class ManagedFlag: Sendable {
    private let box = NIOLockedValueBox(false)
    var isSet: Bool { box.withLockedValue { $0 } }
    func set() { box.withLockedValue { $0 = true } }
}
