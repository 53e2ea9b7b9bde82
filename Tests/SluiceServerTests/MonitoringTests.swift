import Foundation
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// What operators point Prometheus and Grafana at: the rules pass promtool, and every metric the rules and
/// the dashboard name is exported by a live server that has taken batches.
@Suite struct MonitoringTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let rules = root + "/tools/prometheus/sluice.rules.yml"
    static let ruleTests = root + "/tools/prometheus/sluice.rules.test.yml"
    static let dashboard = root + "/docs/grafana/sluice.json"

    static func promtool(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let path = "/usr/bin/promtool"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError("\(path) not found: tools/test installs Debian's prometheus package, which has it")
        }
        return try await onOwnThread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, output)
        }
    }

    @Test func promtoolChecksAndTestsTheRules() async throws {
        let check = try await Self.promtool(["check", "rules", Self.rules])
        #expect(check.status == 0, "\(check.output)")
        let test = try await Self.promtool(["test", "rules", Self.ruleTests])
        #expect(test.status == 0, "\(test.output)")
        #expect(test.output.contains("SUCCESS"), "\(test.output)")
    }

    /// Metric names in PromQL expressions: `sluice_…` and `process_…` (recording rules' `sluice:…` are not metrics).
    static func metricNames(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: #"\b(?:sluice|process)_[a-z0-9_]+\b"#)
        return Set(regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
            String(text[Range($0.range, in: text)!])
        })
    }

    @Test func everyMetricTheRulesAndTheDashboardNameIsExported() async throws {
        let server = try await TestServer.start(database: "srv_monitoring") { config in
            config.httpHost = "127.0.0.1"
            config.httpPort = 0
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(71))
        var nan = SeriesBuilder(deviceID: "d", metric: "m")
        nan.append(timeMicros: Readings.nowMicros - 1000, value: .nan)
        try await client.sendBatch(Readings.batch(seq: 1, count: 100))
        try await client.sendBatch(Readings.batch(seq: 2, series: [nan.build()]))
        _ = try await client.acks(for: [1, 2])
        let httpPort = try #require(server.server.httpPort)
        let (status, body) = try await StatusEndpointTests().get("/metrics", port: httpPort)
        #expect(status == "HTTP/1.1 200 OK")
        let exported = Set(body.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap {
            $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
        })

        let named = Self.metricNames(in: try String(contentsOfFile: Self.rules, encoding: .utf8))
            .union(Self.metricNames(in: try String(contentsOfFile: Self.dashboard, encoding: .utf8)))
        #expect(named.count >= 20, "\(named.sorted())")
        let missing = named.subtracting(exported)
        #expect(missing.isEmpty, "named by the rules or the dashboard but not in /metrics: \(missing.sorted())")

        // The metrics added for them carry real values.
        func value(_ prefix: String) -> Double? {
            body.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(value("sluice_build_info{version=\"\(SluiceServer.version)\"}") == 1)
        #expect((value("sluice_ack_latency_seconds_count") ?? 0) >= 2, "both acks counted")
        #expect((value("process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((value("process_open_fds") ?? 0) > 3)
        #expect((value("sluice_credit_budget_readings") ?? 0) > 0)
        #expect((value("sluice_queue_high_watermark_readings") ?? 0) > (value("sluice_queue_low_watermark_readings") ?? 0))
        #expect(value("sluice_writer_errors_by_class_total{class=\"25\"}") == 0)
        await client.close()
    }

    @Test func theDashboardIsGrafanaJSONWithAnInstanceVariable() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.dashboard))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(json["panels"] as? [[String: Any]])
        #expect(panels.count >= 12)
        let templating = try #require((json["templating"] as? [String: Any])?["list"] as? [[String: Any]])
        #expect(templating.contains { $0["name"] as? String == "instance" })
        for panel in panels {
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "\(panel["title"] ?? "?") has no query")
            for t in targets { #expect((t["expr"] as? String)?.contains("$instance") == true, "\(t)") }
        }
    }
}
