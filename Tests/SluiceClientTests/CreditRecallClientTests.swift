import SluiceClient
import SluiceCore
import SluiceTestSupport
import Testing

/// Idle producers that stay connected give back the credit they hold when the server recalls it, so a producer
/// whose batch needs more than is free is never stuck behind them (issue 14: with credit that could not be taken
/// back, idle connections pinned the budget and a waiting producer waited for ever).
@Suite struct CreditRecallClientTests {
    @Test func idleProducersGiveBackTheirCreditAndABigBatchGoesThrough() async throws {
        // Four idle producers can hold the whole budget (first windows of 2,500, no slice kept for others).
        let flow = FlowController.Configuration(
            budget: 10_000, maxWindow: 10_000, initialWindow: 2_500, minimumWindow: 64, unprovenShare: 1)
        let server = try await TestServer.start(database: "client_credit_recall", flow: flow)
        defer { Task { await server.server.shutdown() } }
        var idle: [SluiceClient] = []
        for n in 0..<4 {
            let client = try await SluiceClient(configuration: clientConfiguration([server.endpoint], batch: 1_000))
            try await client.send(recentReadings(devices: 1, perDevice: 1, device: "idle-\(n)"))
            try await client.flush()
            idle.append(client)
        }
        var held = 0
        for client in idle { held += Int(await client.statistics.creditHeld) }
        #expect(held >= 8_000, "the idle producers hold most of the budget (\(held) of 10,000)")

        // A fifth producer needs 8,000 for one batch: more than is free until the idle ones give theirs back.
        let big = try await SluiceClient(configuration: clientConfiguration([server.endpoint], batch: 8_000))
        let start = ContinuousClock.now
        try await big.send(recentReadings(devices: 4, perDevice: 2_000, device: "big"))
        try await big.flush(timeout: .seconds(60))
        let took = ContinuousClock.now - start
        let bigStats = await big.statistics
        var returned = 0
        for client in idle { returned += await client.statistics.creditReturned }
        print("credit recall: 8,000 readings acked \(took) after they were queued; idle producers gave back \(returned) readings of credit")
        #expect(bigStats.readingsAcked == 8_000)
        #expect(bigStats.reconnects == 0)
        #expect(returned > 0, "the idle producers were recalled")
        #expect(try server.rowCount("device_id LIKE 'big-%'") == 8_000)

        // The idle ones stayed connected, and ask for credit again when they have something to send.
        for (n, client) in idle.enumerated() {
            try await client.send(recentReadings(devices: 1, perDevice: 500, device: "again-\(n)"))
            try await client.flush(timeout: .seconds(60))
            let stats = await client.statistics
            #expect(stats.reconnects == 0, "a recall does not cost a reconnect")
            #expect(stats.readingsAcked == 501)
        }
        #expect(try server.rowCount() == 4 + 8_000 + 2_000)
        for client in idle { try await client.close() }
        try await big.close()
        await server.server.shutdown()
    }
}
