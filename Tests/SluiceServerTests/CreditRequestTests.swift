import NIOConcurrencyHelpers
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// `CreditRequest` over real sockets against a real server and PostgreSQL (issue 14: a reconnect storm
/// starved 183 of 200 producers for ever).
@Suite struct CreditRequestServerTests {
    /// What every client holds after sluiced restarts: one 1,000-reading batch. 200 connect at once to a server
    /// with the shipped flow-control defaults; each asks for what its batch needs when its first window is
    /// smaller. Every one is acked, in a bound that holds on a loaded 2-core CI machine (the measured time is
    /// printed).
    @Test func aReconnectStormOfTwoHundredProducersDrains() async throws {
        let server = try await TestServer.start(database: "srv_credit_storm") { config in
            config.flow = .init()
            // Every producer here comes from 127.0.0.1 at once; devices behind one address past the pre-auth cap
            // are refused and retry, which this raw client does not.
            config.maxUnauthenticatedPerAddress = 1_000
        }
        defer { Task { await server.stop() } }
        let producers = 200
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: (asked: Bool, creditWait: Duration, acked: Duration).self) { group in
            for n in 0..<producers {
                group.addTask {
                    let client = try await RawClient.connect(port: server.port)
                    var id = producerID(0)
                    id[13] = 0xC5
                    id[14] = UInt8(n / 256)
                    id[15] = UInt8(n % 256)
                    let welcome = try await client.handshake(producer: id)
                    #expect(welcome.creditRequests)
                    #expect(welcome.maxBatchReadings >= 1_000)
                    let batch = Readings.batch(seq: 1, device: "storm-\(n)", count: 1_000)
                    let asked = client.held.withLockedValue { $0 } < 1_000
                    let waitStart = ContinuousClock.now
                    if asked { try await client.send(.creditRequest(1_000)) }
                    try await client.sendBatchWhenCredit(batch, timeout: .seconds(60))
                    let creditWait = ContinuousClock.now - waitStart
                    _ = try await client.acks(for: [1], timeout: .seconds(60))
                    let acked = ContinuousClock.now - start
                    await client.close()
                    return (asked, creditWait, acked)
                }
            }
            var all: [(asked: Bool, creditWait: Duration, acked: Duration)] = []
            for try await r in group { all.append(r) }
            return all
        }
        let last = results.map(\.acked).max() ?? .zero
        let longestWait = results.map(\.creditWait).max() ?? .zero
        let asked = results.filter(\.asked).count
        print(
            "credit storm: \(results.count) producers acked, \(asked) needed a CreditRequest; last ack after \(last), longest credit wait \(longestWait)"
        )
        #expect(results.count == producers)
        #expect(asked > 100, "the storm pinned most first windows below the batch (the case of issue 14)")
        #expect(last < .seconds(60))
        #expect(try server.readingRows == producers * 1_000)
    }

    @Test func maxBatchReadingsNeverPromisesMoreThanOneConnectionCanBeGranted() async throws {
        let server = try await TestServer.start(database: "srv_credit_maxbatch") { config in
            config.flow = .init(budget: 100_000, maxWindow: 20_000, initialWindow: 1_000, minimumWindow: 64)
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(60))
        #expect(welcome.maxBatchReadings == 20_000, "capped by the max window, not the validator's 65,536")
        #expect(welcome.initialCredit == 1_000)
        // A batch of max_batch_readings gets its credit through one request.
        try await client.send(.creditRequest(20_000))
        try await client.sendBatchWhenCredit(Readings.batch(seq: 1, count: 20_000), timeout: .seconds(10))
        _ = try await client.acks(for: [1])
        #expect(client.held.withLockedValue { $0 } >= 0)
        await client.close()
    }

    @Test func aRequestAboveMaxBatchReadingsIsInvalidArgumentAndCloses() async throws {
        let server = try await TestServer.start(database: "srv_credit_toobig")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(61))
        try await client.send(.creditRequest(UInt64(welcome.maxBatchReadings) + 1))
        let frames = try await client.framesUntilClosed()
        let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
        #expect(error?.code == .invalidArgument)
        #expect(error?.closing == true)
        #expect(error?.message.contains("max_batch_readings") == true)
    }

    @Test func aCompressedRequestIsReadToo() async throws {
        let server = try await TestServer.start(database: "srv_credit_zstd") { config in
            config.flow = .init(budget: 100_000, maxWindow: 50_000, initialWindow: 100, minimumWindow: 64)
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let welcome = try await client.handshake(producer: producerID(62))
        #expect(welcome.initialCredit == 100)
        try await client.send(.creditRequest(5_000), compressed: true)
        try await client.sendBatchWhenCredit(Readings.batch(seq: 1, count: 5_000), timeout: .seconds(10))
        _ = try await client.acks(for: [1])
        await client.close()
    }
}
