import Foundation
import SluiceTestSupport
import Testing

/// `sluice replay` and `sluice bench` against a real `sluiced`.
@Suite struct ReplayBenchEndToEndTests {
    @Test func replayKeepsTheRecordingsPaceScaledBySpeed() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_replay"))
        // 21 readings 500 ms apart (10 s), recorded long ago (older than the server's max age of 7 days).
        let recorded: Int64 = 1_600_000_000_000  // Unix milliseconds (2020)
        let lines = (0...20).map { i in
            "{\"device\": \"rec-1\", \"metric\": \"temp_c\", \"timestamp\": \(recorded + Int64(i) * 500), \"value\": \(20 + i)}"
        }
        let file = try temporaryFile(lines.joined(separator: "\n") + "\n", suffix: ".jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let started = ContinuousClock.now
        let replay = try sluice(["replay", file, "--speed", "10", "--shift-to-now", "--server", "127.0.0.1:\(daemon.port)"])
        let code = try await replay.waitForExit()
        let elapsed = ContinuousClock.now - started
        #expect(code == 0, "stderr: \(replay.stderr)")
        // 10 s of recording at 10×: about 1 s, not instantly and not 10 s (the upper bound leaves room for the
        // process start-up and connection on a loaded machine).
        #expect(elapsed >= .milliseconds(950) && elapsed < .seconds(9), "took \(elapsed)")
        #expect(try await daemon.rowCount() == 21)
        // Shifted to now: within the last minute, and still 50 ms apart at 10× (recorded 500 ms apart).
        let span = try await onOwnThread { [url = daemon.databaseURL] in
            try TestConnection(url: url).scalar(
                "SELECT (extract(epoch FROM max(time) - min(time)) * 1000)::int FROM readings WHERE time > now() - interval '1 minute'")
        }
        #expect(span >= 950 && span <= 1_050)
        await daemon.stop()
    }

    @Test func benchReportsThroughputLatencyAndWireSizeAsJSON() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_bench"))
        let bench = try sluice([
            "bench", "--server", "127.0.0.1:\(daemon.port)", "--connections", "2", "--devices", "4",
            "--batch-size", "1000", "--count", "40000", "--json",
        ])
        #expect(try await bench.waitForExit() == 0, "stderr: \(bench.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])
        #expect(report["readings"] as? Int == 40_000)
        #expect((report["readings_per_second"] as? Double ?? 0) > 0)
        #expect((report["latency_p99_ms"] as? Double ?? 0) >= (report["latency_p50_ms"] as? Double ?? 1))
        // Regular 1 Hz series at 0.01 resolution: DESIGN §6 asks for at most 2 bytes per reading.
        let wire = try #require(report["wire_bytes_per_reading"] as? Double)
        #expect(wire > 0 && wire <= 2, "\(wire) bytes per reading")
        #expect(try await daemon.rowCount() == 40_000)
        await daemon.stop()
    }
}
