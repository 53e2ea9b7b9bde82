import Foundation
import Logging
import SluiceCore
import SluiceProtocol
import SluiceServer
import SluiceStore
import SluiceTestSupport

/// A `SluiceServer` on 127.0.0.1 port 0 over a fresh database of its own, for one test.
struct TestServer {
    let server: SluiceServer
    let databaseURL: String

    var port: Int { server.localPort }

    /// Short deadlines so liveness tests take a second, not a minute.
    /// Short enough for quick tests, far enough apart that a loaded CI machine cannot swap which fires first:
    /// a stalled frame is noticed after 0.4 s, a silent peer after 3 heartbeats (3 s).
    /// The handshake deadline stays long, here and in `startReusing`: Hello's committed-seq read (and ownership
    /// claim) is a database round trip on a task of the cooperative pool, which this test process shares with
    /// tests that block it; a loaded 2-core machine stretches that past seconds. The deadline test sets its own.
    static let fastTimeouts = SessionStateMachine.Timeouts(
        handshake: 15_000_000_000, heartbeatInterval: 1_000_000_000, frameStall: 400_000_000)

    static func start(
        database: String, configure: (inout SluiceServer.Configuration) -> Void = { _ in }
    ) async throws -> TestServer {
        try await startReusing(databaseURL: try await TestDatabase.freshDatabase(named: database), configure: configure)
    }

    /// Starts on a database that already exists (a restart).
    static func startReusing(
        databaseURL url: String, configure: (inout SluiceServer.Configuration) -> Void = { _ in }
    ) async throws -> TestServer {
        var configuration = SluiceServer.Configuration(
            host: "127.0.0.1", port: 0, httpHost: nil,
            writerPool: .init(databaseURL: url, writers: 2),
            flow: .init(budget: 200_000, maxWindow: 50_000, initialWindow: 50_000), timeouts: .init(handshake: 30_000_000_000, heartbeatInterval: 5_000_000_000),
            pipelineConcurrency: 2, eventLoopThreads: 2)
        configuration.drainTimeout = 10
        configure(&configuration)
        var logger = Logger(label: "sluiced-test")
        logger.logLevel = ProcessInfo.processInfo.environment["SLUICE_TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        let server = SluiceServer(configuration: configuration, logger: logger)
        try await server.start()
        return TestServer(server: server, databaseURL: url)
    }

    func stop() async {
        await server.shutdown()
    }

    func count(_ sql: String) throws -> Int {
        try TestConnection(url: databaseURL).scalar(sql)
    }

    var readingRows: Int { get throws { try count("SELECT count(*) FROM readings") } }
}

/// A well-behaved producer streaming in the background: `batches` batches of `size` readings, each acked.
/// Used next to a misbehaving client to show that the misbehaviour costs only its sender.
struct HealthyNeighbour {
    let task: Task<Int, any Error>

    static func start(
        port: Int, producer: UInt8, token: String = "", batches: Int = 40, size: Int = 50, pace: Duration = .milliseconds(10)
    ) -> HealthyNeighbour {
        HealthyNeighbour(
            task: Task {
                let client = try await RawClient.connect(port: port)
                defer { Task { await client.close() } }
                try await client.handshake(producer: producerID(producer), token: token)
                for seq in 1...UInt64(batches) {
                    let batch = Readings.batch(seq: seq, device: "neighbour-\(producer)", count: size)
                    while client.held.withLockedValue({ $0 }) < size {
                        _ = try await client.next()
                    }
                    try await client.sendBatch(batch)
                    try await Task.sleep(for: pace)
                }
                let acks = try await client.acks(for: Set(1...UInt64(batches)))
                return acks.values.reduce(0) { $0 + Int($1.accepted) }
            })
    }

    /// Readings acked; throws if the neighbour was disturbed.
    func finish() async throws -> Int { try await task.value }
}
