import Foundation
import SluiceTestSupport
import Testing

/// `sluice send` driven as a user would, against a real `sluiced` and PostgreSQL.
@Suite struct SendEndToEndTests {
    @Test func sendingA100kReadingCSVLandsExactlyEveryRow() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_send_100k"))
        let file = try temporaryFile("device,metric,timestamp,value\n" + csvLines(0..<100_000))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let send = try sluice(["send", file, "--server", "127.0.0.1:\(daemon.port)"])
        let code = try await send.waitForExit()
        #expect(code == 0, "stderr: \(send.stderr)")
        #expect(send.stdout.contains("100,000 acknowledged"))
        #expect(try await daemon.rowCount() == 100_000)
        await daemon.stop()
    }

    @Test func badLinesAreReportedWithTheirLineNumbersAndTheRestLands() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_send_bad_lines"))
        var lines = csvLines(0..<1_000).split(separator: "\n").map(String.init)
        lines.insert("dev-1,temp_c,yesterday,20.5", at: 9)  // line 10
        lines.insert("dev-2,temp_c,1714564800", at: 499)  // line 500
        lines.insert("dev-3,temp_c,1714564800,warm", at: 799)  // line 800
        let file = try temporaryFile(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let send = try sluice(["send", file, "--server", "127.0.0.1:\(daemon.port)"])
        let code = try await send.waitForExit()
        #expect(code == 1)
        #expect(send.stderr.contains("\(file):10: timestamp \"yesterday\""))
        #expect(send.stderr.contains("\(file):500: expected 4 or 5 comma-separated fields"))
        #expect(send.stderr.contains("\(file):800: value \"warm\" is not a number"))
        #expect(send.stdout.contains("bad input lines   3"))
        #expect(try await daemon.rowCount() == 1_000)
        await daemon.stop()
    }

    @Test func aShortSendListsTheReadingTheServerDeadLetteredAndWhy() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_send_nan"))
        // Three lines: the run ends right after its one ack, so the summary must wait for that ack's reasons.
        let file = try temporaryFile(csvLines(0..<2) + "dev-9,temp_c,\(csvBase),NaN\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let send = try sluice(["send", file, "--server", "127.0.0.1:\(daemon.port)"])
        let code = try await send.waitForExit()
        #expect(code == 1)
        #expect(send.stdout.contains("dead-lettered     1"))
        #expect(send.stderr.contains("rejected by the server:"), "stderr: \(send.stderr)")
        #expect(send.stderr.contains("(dev-9 temp_c at "), "stderr: \(send.stderr)")
        #expect(send.stderr.contains("VALUE_NOT_FINITE: value is NaN"), "stderr: \(send.stderr)")
        #expect(try await daemon.rowCount() == 2)
        await daemon.stop()
    }

    @Test func aSIGKILLedDaemonIsReconnectedToAndEveryReadingLandsExactlyOnce() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_send_sigkill")
        let first = try await Sluiced.start(databaseURL: url)
        let send = try sluice([
            "send", "--server", "127.0.0.1:\(first.port)", "--batch-size", "1000", "--linger-ms", "20",
            "--progress-interval", "0.2",
        ])
        await send.writeStdin(csvLines(0..<50_000))
        // Wait until the first part is durable, then kill the daemon with the next part in flight.
        let deadline = ContinuousClock.now + .seconds(30)
        while try await first.rowCount() < 50_000, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        await send.writeStdin(csvLines(50_000..<100_000))
        try await Task.sleep(for: .milliseconds(30))
        first.process.kill(SIGKILL)
        _ = try await first.process.waitForExit()
        // More input while the daemon is down: the client buffers it and keeps trying.
        await send.writeStdin(csvLines(100_000..<200_000))
        try await send.waitForStderr("lost or refused")
        let second = try await Sluiced.start(databaseURL: url, port: first.port, stateDir: first.stateDir)
        send.closeStdin()
        let code = try await send.waitForExit()
        #expect(code == 0, "stderr: \(send.stderr.suffix(3000))")
        #expect(send.stderr.contains("reconnected"))
        #expect(try await second.rowCount() == 200_000)
        #expect(try await second.rowCount(distinct: true) == 200_000)
        await second.stop()
    }

    @Test func sendWaitsForCreditWhilePostgresIsHeldBackAndCompletesOnRelease() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_send_credit_wait")
        let daemon = try await Sluiced.start(databaseURL: url)
        // More readings than one connection's credit window (262,144 by default), so the client must wait.
        let count = 320_000
        let file = try temporaryFile(csvLines(0..<count, devices: 40))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let lock = try await TableLock.hold(url: url, table: "readings")
        let send = try sluice(["send", file, "--server", "127.0.0.1:\(daemon.port)", "--progress-interval", "0.2"])
        try await send.waitForStderr("waiting for credit", timeout: .seconds(60))
        #expect(send.exitCode == nil)
        await lock.release()
        let code = try await send.waitForExit(timeout: .seconds(90))
        #expect(code == 0, "stderr: \(send.stderr.suffix(3000))")
        #expect(try await daemon.rowCount() == count)
        let waits = try #require(send.stdout.split(separator: "\n").first { $0.contains("credit waits") })
        #expect(!waits.contains("credit waits      0 "))
        await daemon.stop()
    }
}
