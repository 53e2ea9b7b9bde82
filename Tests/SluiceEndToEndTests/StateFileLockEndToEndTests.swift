import Foundation
import SluiceTestSupport
import Testing

/// `--state-file` is one producer's identity: a second `sluice send` on the same file, while the first runs,
/// fails at once naming the file and the first one's PID; once the first is done, the file can be used again.
@Suite(.timeLimit(.minutes(3))) struct StateFileLockEndToEndTests {
    @Test func aSecondSendOnTheSameStateFileFailsNamingTheFileAndTheHoldersPID() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_state_file_lock")
        let daemon = try await Sluiced.start(databaseURL: url)
        let stateFile = NSTemporaryDirectory() + "sluice-e2e-state-\(UUID().uuidString).json"
        defer {
            try? FileManager.default.removeItem(atPath: stateFile)
            try? FileManager.default.removeItem(atPath: stateFile + ".lock")
        }
        let server = "127.0.0.1:\(daemon.port)"
        // The first reads stdin, which stays open: it keeps running (and holding the file) until we close it.
        let first = try sluice(["send", "--server", server, "--state-file", stateFile])
        await first.writeStdin(csvLines(0..<10))
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? String(contentsOfFile: stateFile + ".lock", encoding: .utf8))?.contains("\(first.pid)") != true {
            #expect(first.exitCode == nil, "the first send exited: \(first.stderr)")
            guard ContinuousClock.now < deadline, first.exitCode == nil else {
                Issue.record("the first send did not lock \(stateFile) within 30 s: \(first.stderr)")
                await daemon.stop()
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }

        let second = try sluice(["send", "--server", server, "--state-file", stateFile])
        second.closeStdin()
        let secondCode = try await second.waitForExit(timeout: .seconds(30))
        #expect(secondCode != 0)
        #expect(second.stderr.contains(stateFile), "stderr: \(second.stderr)")
        #expect(second.stderr.contains("process \(first.pid)"), "stderr: \(second.stderr)")
        #expect(first.exitCode == nil)

        first.closeStdin()
        #expect(try await first.waitForExit(timeout: .seconds(60)) == 0, "stderr: \(first.stderr.suffix(2000))")
        // Free again once the holder has exited.
        let third = try sluice(["send", "--server", server, "--state-file", stateFile])
        await third.writeStdin(csvLines(10..<20))
        third.closeStdin()
        #expect(try await third.waitForExit(timeout: .seconds(60)) == 0, "stderr: \(third.stderr.suffix(2000))")
        #expect(try await daemon.rowCount() == 20)
        await daemon.stop()
    }
}
