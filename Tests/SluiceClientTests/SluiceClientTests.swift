import Foundation
import SluiceClient
import SluiceCore
import SluiceTestSupport
import Testing

/// The client against the real server (in process) and the real PostgreSQL.
@Suite struct SluiceClientTests {
    @Test func flushReturnsOnceEverySentReadingIsDurable() async throws {
        let server = try await TestServer.start(database: "client_flush")
        defer { Task { await server.server.shutdown() } }
        let client = try await SluiceClient(configuration: clientConfiguration([server.endpoint], batch: 2_000))
        let readings = recentReadings(devices: 5, perDevice: 2_000)
        try await client.send(Array(readings[..<5_000]))
        try await client.send(Array(readings[5_000...]))
        try await client.flush()
        #expect(try server.rowCount() == 10_000)
        let stats = await client.statistics
        #expect(stats.readingsAcked == 10_000 && stats.readingsAccepted == 10_000)
        #expect(stats.readingsOutstanding == 0)
        // 1 Hz readings at 0.01 resolution: a byte or two each on the wire (DESIGN §6).
        #expect(Double(stats.batchWireBytes) / Double(stats.batchWireReadings) < 2.0)
        try await client.close()
        await server.server.shutdown()
    }

    @Test func readingsTheServerRejectsComeBackWithReasonsAndTheReadingItself() async throws {
        let server = try await TestServer.start(database: "client_rejections")
        let client = try await SluiceClient(configuration: clientConfiguration([server.endpoint]))
        var readings = recentReadings(devices: 1, perDevice: 10)
        readings[3].value = .nan
        readings[7].timeMicros -= 30 * 86_400 * 1_000_000  // a month old: older than max age
        let acks = Task {
            var rejections: [ReadingRejection] = []
            for await event in client.events {
                if case .acked(let ack) = event { rejections += ack.rejections }
            }
            return rejections
        }
        try await client.send(readings)
        try await client.close()
        let rejections = await acks.value
        #expect(try server.rowCount() == 8)
        #expect(Set(rejections.map(\.code)) == ["VALUE_NOT_FINITE", "TOO_OLD"])
        #expect(rejections.contains { $0.reading?.value.isNaN == true })
        #expect(rejections.contains { $0.reading?.timeMicros == readings[7].timeMicros })
        let stats = await client.statistics
        #expect(stats.readingsRejected == 2 && stats.readingsAccepted == 8)
        await server.server.shutdown()
    }

    @Test func batchesLargerThanTheCreditAreSplitNeverSentPastIt() async throws {
        // A window of 700 readings per connection, batches of up to 5,000: the client must cut to the credit.
        let flow = FlowController.Configuration(budget: 700, maxWindow: 700, queueHighWater: 600, queueLowWater: 100)
        let server = try await TestServer.start(database: "client_credit_split", flow: flow)
        let client = try await SluiceClient(configuration: clientConfiguration([server.endpoint], batch: 5_000))
        try await client.send(recentReadings(devices: 3, perDevice: 2_000))
        try await client.close(timeout: .seconds(60))
        #expect(try server.rowCount() == 6_000)
        let stats = await client.statistics
        #expect(stats.batchesSent >= 9)
        #expect(stats.reconnects == 0)  // a credit violation would have closed the connection
        #expect(stats.creditWaits > 0)
        await server.server.shutdown()
    }

    @Test func aBatchBiggerThanTheCreditHeldIsAskedForAndSentWhole() async throws {
        // A first window of 100; batches of up to 5,000: once the 100 are used, the client asks for a whole
        // batch (CreditRequest) instead of waiting for slow start to grow its window.
        let flow = FlowController.Configuration(budget: 100_000, maxWindow: 50_000, initialWindow: 100, minimumWindow: 64)
        let server = try await TestServer.start(database: "client_credit_request", flow: flow)
        let client = try await SluiceClient(configuration: clientConfiguration([server.endpoint], batch: 5_000))
        try await client.send(recentReadings(devices: 1, perDevice: 5_000))
        try await client.close(timeout: .seconds(60))
        #expect(try server.rowCount() == 5_000)
        let stats = await client.statistics
        #expect(stats.creditRequests >= 1)
        #expect(stats.batchesSent <= 3, "100 first, then the rest in one batch (sent \(stats.batchesSent))")
        #expect(stats.reconnects == 0)
        await server.server.shutdown()
    }

    @Test func aRestartedServerGetsTheUnackedBatchesAgainAndKeepsEachReadingOnce() async throws {
        let first = try await TestServer.start(database: "client_server_restart")
        let port = first.server.localPort
        let client = try await SluiceClient(configuration: clientConfiguration([first.endpoint], batch: 500))
        let readings = recentReadings(devices: 4, perDevice: 2_500)
        try await client.send(Array(readings[..<2_000]))
        try await client.flush()
        // Stop the server (drain) with batches in flight, then send more while it is gone.
        try await client.send(Array(readings[2_000..<4_000]))
        await first.server.shutdown()
        try await client.send(Array(readings[4_000...]))
        let second = try await TestServer.start(database: "", port: port, reuseDatabase: first.databaseURL)
        try await client.flush(timeout: .seconds(60))
        #expect(try second.rowCount() == 10_000)
        #expect(try second.distinctRowCount() == 10_000)
        #expect(await client.statistics.reconnects >= 1)
        try await client.close()
        await second.server.shutdown()
    }

    @Test func aProducerWithAStateFileKeepsItsIdentityAndContinuesItsSeq() async throws {
        let server = try await TestServer.start(database: "client_state_file")
        let path = NSTemporaryDirectory() + "sluice-state-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let readings = recentReadings(devices: 1, perDevice: 400)
        let one = try await SluiceClient(configuration: clientConfiguration([server.endpoint], producer: .stateFile(path), batch: 100))
        try await one.send(Array(readings[..<200]))
        try await one.close()
        let firstNext = await one.nextSeq
        let two = try await SluiceClient(configuration: clientConfiguration([server.endpoint], producer: .stateFile(path), batch: 100))
        #expect(two.producer == one.producer)
        try await two.send(Array(readings[200...]))
        try await two.close()
        #expect(await two.nextSeq > firstNext)
        // Had the second run restarted at seq 1, the server would have acked its batches as duplicates.
        #expect(try server.rowCount() == 400)
        #expect(await two.statistics.batchesDuplicate == 0)
        await server.server.shutdown()
    }

    @Test func flushGivesUpAfterItsTimeoutWhenNoServerAnswers() async throws {
        let client = try await SluiceClient(
            configuration: clientConfiguration([Endpoint(host: "127.0.0.1", port: 1)]))
        try await client.send(recentReadings(devices: 1, perDevice: 3))
        await #expect {
            try await client.flush(timeout: .milliseconds(300))
        } throws: { error in
            guard case ClientError.flushTimedOut(let readings, _, let last) = error else { return false }
            return readings == 3 && (last ?? "").contains("refused")
        }
        _ = try? await client.close(timeout: .milliseconds(10))
    }

    @Test func endpointsAreTriedInTurnUntilOneAnswers() async throws {
        let server = try await TestServer.start(database: "client_endpoints")
        let client = try await SluiceClient(
            configuration: clientConfiguration([Endpoint(host: "127.0.0.1", port: 1), server.endpoint]))
        try await client.send(recentReadings(devices: 2, perDevice: 50))
        try await client.close(timeout: .seconds(30))
        #expect(try server.rowCount() == 100)
        await server.server.shutdown()
    }

    @Test func aRefusedTokenStopsTheClientWithAnErrorSayingWhatToDo() async throws {
        var random = SystemRandomNumberGenerator()
        let (token, entry) = TokenTable.makeToken(devicePrefix: "", name: "test", createdAt: 0, using: &random)
        let server = try await TestServer.start(database: "client_tokens", tokens: TokenTable(entries: [entry]))
        var configuration = clientConfiguration([server.endpoint])
        configuration.token = "slu_not-the-token"
        let refused = try await SluiceClient(configuration: configuration)
        try await refused.send(recentReadings(devices: 1, perDevice: 5))
        await #expect {
            try await refused.flush(timeout: .seconds(20))
        } throws: { error in
            guard case ClientError.unauthenticated = error else { return false }
            return "\(error)".contains("--token")
        }
        await #expect(throws: ClientError.self) { try await refused.send(recentReadings(devices: 1, perDevice: 1)) }
        _ = try? await refused.close()

        configuration.token = token
        let accepted = try await SluiceClient(configuration: configuration)
        try await accepted.send(recentReadings(devices: 1, perDevice: 5))
        try await accepted.close(timeout: .seconds(20))
        #expect(try server.rowCount() == 5)
        await server.server.shutdown()
    }
}
