import Foundation
import SluiceTestSupport
import Testing

/// `tools/chaos` at CI size: while `sluice send` streams 120,000 readings generated from a seed, sluiced is
/// SIGKILLed and restarted 10 times, PostgreSQL restarted 3 times (fast and immediate), the readings table
/// locked twice for 3 s and sluiced paused twice for 2 s. Afterwards the table holds exactly the expected set.
///
/// Serialized, and the parent of `DeliveryFaultChaosTests`: each of these runs a `sluiced` and PostgreSQL under
/// faults on 2 shared cores, so they take turns instead of pushing each other past their bounds.
@Suite(.serialized) struct KillRestartChaosTests {
    @Test func everyReadingLandsExactlyOnceThroughKillsRestartsLocksAndPauses() async throws {
        guard let binDir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test, which builds sluiced and sluice")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let (status, stdout, stderr) = try await run(
            root.appendingPathComponent("tools/chaos").path,
            ["--bin-dir", binDir, "--kills", "10", "--pg-restarts", "3", "--locks", "2", "--pauses", "2", "--refuse", "0", "--read-only", "0",
             "--seed", "7", "--json"])
        let line = stdout.split(separator: "\n").last.map(String.init) ?? ""
        let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Int] ?? [:]
        print("chaos: tools/chaos \(line)")
        #expect(status == 0, "tools/chaos failed: \(stdout)\n\(stderr.suffix(3000))")
        #expect(report["expected"] == 120_000)
        #expect(report["lost"] == 0 && report["duplicated"] == 0 && report["extra"] == 0 && report["wrong_value"] == 0, "\(line)")
        #expect(report["kills"] == 10 && report["pg_restarts"] == 3 && report["locks"] == 2 && report["pauses"] == 2, "\(line)")
    }

    /// `tools/chaos` with the faults of issue 14 in the `sluice send` stream: a CHECK constraint and a RAISE trigger
    /// refusing values >= 1e12 (about one reading in 400 is one) for 2 s each, a read-only spell of 3 s, a kill and a
    /// pause. Every reading must end up in `readings` or (with its reason) in `dead_letters`, exactly once, and
    /// `sluice send` must have every batch acked within 30 s of its last reading (the bound for this run).
    @Test func everyReadingLandsExactlyOnceThroughRefusalsAndReadOnly() async throws {
        guard let binDir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test, which builds sluiced and sluice")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let (status, stdout, stderr) = try await run(
            root.appendingPathComponent("tools/chaos").path,
            ["--bin-dir", binDir, "--kills", "1", "--pg-restarts", "0", "--locks", "0", "--pauses", "1", "--refuse", "2", "--read-only", "1",
             "--readings", "40000", "--seed", "9", "--send-timeout", "30", "--json"])
        let line = stdout.split(separator: "\n").last.map(String.init) ?? ""
        let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Int] ?? [:]
        print("chaos: tools/chaos \(line)")
        #expect(status == 0, "tools/chaos failed: \(stdout)\n\(stderr.suffix(3000))")
        #expect(report["expected"] == 40_000)
        #expect(report["lost"] == 0 && report["duplicated"] == 0 && report["extra"] == 0 && report["wrong_value"] == 0, "\(line)")
        #expect(report["dead_letters_without_reason"] == 0, "\(line)")
        #expect(report["refusals"] == 2 && report["read_only"] == 1, "\(line)")
    }

    /// Runs `path` to completion off the cooperative pool (the wait happens in Process's termination handler).
    private func run(_ path: String, _ arguments: [String]) async throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-\(UUID().uuidString).out")
        let err = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try ProcessLaunch.run(process) } catch { continuation.resume(throwing: error) }
        }
        return (status, (try? String(contentsOf: out, encoding: .utf8)) ?? "", (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }
}
