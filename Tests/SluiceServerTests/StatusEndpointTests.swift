import Foundation
import NIOCore
import NIOPosix
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

@Suite struct StatusEndpointTests {
    /// A plain HTTP/1.1 GET, reading until the server closes.
    func get(_ path: String, port: Int) async throws -> (status: String, body: String) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        var text = ""
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            for try await chunk in inbound { text += String(buffer: chunk) }
        }
        let parts = text.components(separatedBy: "\r\n\r\n")
        return (parts.first?.components(separatedBy: "\r\n").first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    @Test func statusAndMetricsReportRealCounters() async throws {
        let server = try await TestServer.start(database: "srv_status") { config in
            config.httpHost = "127.0.0.1"
            config.httpPort = 0
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(70))
        var nan = SeriesBuilder(deviceID: "d", metric: "m")
        nan.append(timeMicros: Readings.nowMicros - 1000, value: .nan)
        try await client.sendBatch(Readings.batch(seq: 1, count: 100))
        try await client.sendBatch(Readings.batch(seq: 2, series: [nan.build()]))
        _ = try await client.acks(for: [1, 2])
        let httpPort = try #require(server.server.httpPort)

        let (status, body) = try await get("/status", port: httpPort)
        #expect(status == "HTTP/1.1 200 OK")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        #expect(json["version"] as? String == "0.1.0")
        #expect(json["listen"] as? String == "127.0.0.1:\(server.port)")
        #expect(json["connections"] as? Int == 1)
        #expect(json["batches_accepted"] as? Int == 2)
        #expect(json["batches_duplicate"] as? Int == 0)
        #expect(json["batches_rejected"] as? Int == 0)
        #expect(json["readings_accepted"] as? Int == 100)
        #expect(json["readings_rejected"] as? Int == 1)
        #expect(json["database"] as? String == "ok")
        for key in ["uptime_seconds", "queue_depth_readings", "credit_held_readings", "commit_latency_p99_ms"] {
            #expect(json[key] is NSNumber, "\(key)")
        }

        // An HTTP request on the ingest port is a wrong preface: counted by status code.
        _ = try? await get("/", port: server.port)
        // The HTTP request sent to the ingest port above is closed by the server; wait until that close is
        // counted (a loaded machine takes its time), so the gauges below are of this test's one client.
        var (metricsStatus, metrics) = try await get("/metrics", port: httpPort)
        let settled = ContinuousClock.now + .seconds(60)
        func oneConnection(_ text: String) -> Bool {
            text.split(separator: "\n").contains { $0 == "sluice_connections 1" || $0 == "sluice_connections 1.0" }
        }
        while !oneConnection(metrics) && ContinuousClock.now < settled {
            try await Task.sleep(for: .milliseconds(50))
            (metricsStatus, metrics) = try await get("/metrics", port: httpPort)
        }
        #expect(metrics.contains("sluice_errors_sent_by_code_total{code=\"PROTOCOL_ERROR\"} 1"), "\(metrics)")
        #expect(metrics.contains("sluice_event_loop_lag_seconds"), "stall detector exported")
        #expect(metrics.contains("sluice_credit_waiting_connections 0"))
        #expect(metricsStatus == "HTTP/1.1 200 OK")
        #expect(metrics.contains("sluice_batches_total{outcome=\"accepted\"} 2"))
        #expect(metrics.contains("sluice_readings_total{outcome=\"accepted\"} 100"))
        #expect(metrics.contains("sluice_readings_total{outcome=\"rejected\"} 1"))
        #expect(metrics.contains("sluice_connections 1"))
        #expect(metrics.contains("sluice_commit_latency_seconds_bucket"))

        let (missing, _) = try await get("/nope", port: httpPort)
        #expect(missing == "HTTP/1.1 404 Not Found")
        await client.close()
    }
}
