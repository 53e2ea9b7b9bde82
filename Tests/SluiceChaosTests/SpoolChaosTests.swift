import Foundation
import SluiceTestSupport
import Testing

/// `tools/spool-chaos` at CI size: `sluice send --spool` is SIGKILLed 12 times mid-stream (seeded), every third time
/// together with sluiced and an immediate PostgreSQL stop, and restarted on its input from the first line the spool had
/// not taken; then sluiced stays away while the spool fills to 64 KiB (input reading must stop) and comes back.
/// Every reading must land exactly once, and a second sender on a busy spool must be refused.
///
/// An extension of `KillRestartChaosTests`, so it takes its turn with the other daemon-killing tests.
extension KillRestartChaosTests {
    @Test func spooledReadingsLandExactlyOnceThroughSenderKillsAndAnOutage() async throws {
        guard let binDir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test, which builds sluiced and sluice")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let (status, stdout, stderr) = try await runScript(
            root.appendingPathComponent("tools/spool-chaos").path, ["--bin-dir", binDir, "--kills", "12", "--seed", "5", "--json"])
        let line = stdout.split(separator: "\n").last.map(String.init) ?? ""
        let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        print("chaos: tools/spool-chaos \(line)")
        func int(_ key: String) -> Int? { report[key] as? Int }
        #expect(status == 0, "tools/spool-chaos failed: \(stdout)\n\(stderr.suffix(3000))")
        #expect(int("kills") == 12 && int("daemon_kills") == 4, "\(line)")
        #expect(int("lost") == 0 && int("duplicated") == 0 && int("extra") == 0 && int("wrong_value") == 0, "\(line)")
        #expect(int("outage_lost") == 0 && int("outage_duplicated") == 0 && int("outage_extra") == 0, "\(line)")
        #expect(int("outage_reading_stopped") == 1 && int("outage_bounded") == 1, "\(line)")
        #expect(int("second_refused") == 1 && int("sender_exit") == 0 && int("outage_exit") == 0, "\(line)")
    }

    /// Runs `path` to completion off the cooperative pool (the wait happens in Process's termination handler).
    private func runScript(_ path: String, _ arguments: [String]) async throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("spool-chaos-\(UUID().uuidString).out")
        let err = FileManager.default.temporaryDirectory.appendingPathComponent("spool-chaos-\(UUID().uuidString).err")
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
