import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// `CreditRecall` / `CreditReturn` over real sockets: what a client that says it answers recalls owes the
/// server, and what it costs one that does not keep its word (only itself).
@Suite struct CreditRecallServerTests {
    /// Keeps `client` alive while the test is busy elsewhere: a Ping every 100 ms (the server's heartbeat
    /// timeout counts frames from the client, and a test not reading answers no Ping).
    static func pinging(_ client: RawClient) -> Task<Void, Never>? {
        Task {
            var nonce: UInt64 = 0
            while !Task.isCancelled {
                nonce += 1
                var ping = Ping()
                ping.nonce = nonce
                guard (try? await client.send(ClientFrame(.ping(ping)))) != nil else { return }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// One idle connection holds the whole budget; a second asks for a batch's worth.
    func holderAndAsker(
        database: String, heartbeat: UInt64 = 5_000_000_000, alive: (RawClient) -> Task<Void, Never>? = { _ in nil }
    ) async throws -> (TestServer, RawClient, RawClient, [Task<Void, Never>]) {
        let server = try await TestServer.start(database: database) { config in
            config.flow = .init(budget: 10_000, maxWindow: 10_000, initialWindow: 10_000, minimumWindow: 64, unprovenShare: 1)
            config.timeouts = .init(handshake: 30_000_000_000, heartbeatInterval: heartbeat)
        }
        let holder = try await RawClient.connect(port: server.port)
        let welcome = try await holder.handshake(producer: producerID(70), creditReturns: true)
        #expect(welcome.initialCredit == 10_000)
        var keepAlive = [alive(holder)].compactMap { $0 }
        let asker = try await RawClient.connect(port: server.port)
        let askerWelcome = try await asker.handshake(producer: producerID(71), creditReturns: true)
        #expect(askerWelcome.initialCredit == 0, "the budget is held")
        if let task = alive(asker) { keepAlive.append(task) }
        try await asker.send(.creditRequest(4_000))
        return (server, holder, asker, keepAlive)
    }

    @Test func aRecalledClientsReturnReachesTheWaitingRequest() async throws {
        let (server, holder, asker, keepAlive) = try await holderAndAsker(database: "srv_recall_return", alive: Self.pinging)
        defer {
            for task in keepAlive { task.cancel() }
            Task { await server.stop() }
        }
        let (recallFrame, _) = try await holder.read(until: { if case .creditRecall = $0.kind { true } else { false } })
        guard case .creditRecall(let recall)? = recallFrame?.kind else {
            Issue.record("no CreditRecall reached the idle holder")
            return
        }
        #expect(recall.readings == 10_000, "everything it holds")
        // It uses 1,000 first (a batch crossing the recall), then gives back the rest.
        try await holder.sendBatch(Readings.batch(seq: 1, device: "holder", count: 1_000))
        try await holder.send(.creditReturn(9_000))
        holder.held.withLockedValue { $0 -= 9_000 }
        try await asker.sendBatchWhenCredit(Readings.batch(seq: 1, device: "asker", count: 4_000), timeout: .seconds(30))
        _ = try await asker.acks(for: [1], timeout: .seconds(30))
        _ = try await holder.acks(for: [1], timeout: .seconds(30))
        #expect(try server.readingRows == 5_000)
        await holder.close()
        await asker.close()
    }

    @Test func aClientThatIgnoresARecallIsClosedAndItsCreditFreed() async throws {
        // Heartbeats of 2 s: the recall must be answered within 6 s. Both clients are alive (each sends a Ping
        // every 100 ms, so no heartbeat timeout can close one first, however loaded the machine); the holder
        // never returns credit.
        let (server, holder, asker, keepAlive) = try await holderAndAsker(
            database: "srv_recall_ignored", heartbeat: 2_000_000_000,
            alive: Self.pinging)
        defer {
            for task in keepAlive { task.cancel() }
            Task { await server.stop() }
        }
        let start = ContinuousClock.now
        let frames = try await holder.framesUntilClosed(timeout: .seconds(60))
        print("credit recall: a client ignoring its recall was closed \(ContinuousClock.now - start) after it was asked")
        #expect(frames.contains { if case .creditRecall = $0.kind { true } else { false } })
        let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
        #expect(error?.code == .failedPrecondition)
        #expect(error?.closing == true)
        #expect(error?.message.contains("CreditRecall not answered") == true, "\(error?.message ?? "no error")")
        // Its credit went back to the budget with the connection: the asker is served.
        try await asker.sendBatchWhenCredit(Readings.batch(seq: 1, device: "asker", count: 4_000), timeout: .seconds(30))
        _ = try await asker.acks(for: [1], timeout: .seconds(30))
        await asker.close()
    }

    @Test func givingBackMoreThanHeldIsResourceExhaustedAndCloses() async throws {
        let server = try await TestServer.start(database: "srv_recall_overreturn") { config in
            config.flow = .init(budget: 10_000, maxWindow: 10_000, initialWindow: 1_000, minimumWindow: 64)
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(72), creditReturns: true)
        #expect(welcome.initialCredit == 1_000)
        try await client.sendBatch(Readings.batch(seq: 1, count: 10))
        _ = try await client.acks(for: [1])
        // More than the whole budget: more than it can hold, whatever Credit is still on its way.
        try await client.send(.creditReturn(10_001))
        let frames = try await client.framesUntilClosed()
        let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
        #expect(error?.code == .resourceExhausted)
        #expect(error?.closing == true)
        #expect(error?.message.contains("CreditReturn") == true)
        // What was accepted before stays: the batch is stored.
        #expect(try server.readingRows == 10)
    }
}
