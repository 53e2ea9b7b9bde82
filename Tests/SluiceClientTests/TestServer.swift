import Foundation
import Logging
import SluiceClient
import SluiceCore
import SluiceServer
import SluiceStore
import SluiceTestSupport

/// An in-process sluiced on a free port with its own fresh database.
struct TestServer {
    let server: SluiceServer
    let databaseURL: String

    static func start(
        database name: String, port: Int = 0, flow: FlowController.Configuration = .init(), reuseDatabase: String? = nil,
        tokens: TokenTable = TokenTable()
    ) async throws -> TestServer {
        let url: String
        if let reuseDatabase { url = reuseDatabase } else { url = try await TestDatabase.freshDatabase(named: name) }
        var logger = Logger(label: "test-sluiced")
        logger.logLevel = .warning
        // Rebinding a port just given up can fail for a moment: the client under test keeps dialling it, and
        // on loopback such a dial can briefly hold the port itself (TCP simultaneous open). Retry for a while.
        var attempt = 0
        while true {
            let server = SluiceServer(
                configuration: .init(host: "127.0.0.1", port: port, writerPool: .init(databaseURL: url), flow: flow,
                    tokens: tokens, eventLoopThreads: 1),
                logger: logger)
            do {
                try await server.start()
                return TestServer(server: server, databaseURL: url)
            } catch where port != 0 && attempt < 50 && "\(error)".contains("Address already in use") {
                attempt += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: server.localPort) }

    func rowCount(_ condition: String = "true") throws -> Int {
        try TestConnection(url: databaseURL).scalar("SELECT count(*) FROM readings WHERE \(condition)")
    }

    func distinctRowCount() throws -> Int {
        try TestConnection(url: databaseURL).scalar(
            "SELECT count(*) FROM (SELECT DISTINCT device_id, metric, time FROM readings) d")
    }
}

/// Readings stamped a little before now (inside the server's accepted window), 1 s apart per device.
func recentReadings(devices: Int, perDevice: Int, metric: String = "temp_c", device prefix: String = "dev") -> [Reading] {
    let base = Int64(Date().timeIntervalSince1970 * 1_000_000) - Int64(perDevice + 60) * 1_000_000
    var out: [Reading] = []
    out.reserveCapacity(devices * perDevice)
    for i in 0..<perDevice {
        for d in 0..<devices {
            out.append(
                Reading(
                    deviceID: "\(prefix)-\(d)", metric: metric, timeMicros: base + Int64(i) * 1_000_000,
                    value: Double(2_000 + (i % 50)) / 100))
        }
    }
    return out
}

func clientConfiguration(_ endpoints: [Endpoint], producer: ProducerSource = .ephemeral, batch: Int = 1_000)
    -> SluiceClientConfiguration
{
    // A long connect timeout: the endpoints that fail in these tests refuse at once (port 1) or close, and a
    // Welcome can take seconds on a loaded 2-core machine; a 3 s limit made healthy clients reconnect there.
    SluiceClientConfiguration(
        endpoints: endpoints, producer: producer, maxBatchReadings: batch, reconnectInitialDelay: .milliseconds(20),
        reconnectMaxDelay: .milliseconds(300), connectTimeout: .seconds(30))
}
