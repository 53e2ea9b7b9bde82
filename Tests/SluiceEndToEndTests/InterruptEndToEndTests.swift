import Foundation
import SluiceTestSupport
import Testing

/// `sluice send` interrupted as a user would (Ctrl-C, SIGTERM, Ctrl-C twice) while streaming from a pipe that
/// stays open, against a real `sluiced` and PostgreSQL.
@Suite struct InterruptEndToEndTests {
    @Test func ctrlCOnceEverythingIsAcknowledgedPrintsTheSummaryExits130AndARerunWritesNothingTwice() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_interrupt_sigint"))
        let stateFile = NSTemporaryDirectory() + "sluice-e2e-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: stateFile) }
        let send = try sluice([
            "send", "--server", "127.0.0.1:\(daemon.port)", "--batch-size", "500", "--linger-ms", "20",
            "--progress-interval", "0.2", "--state-file", stateFile,
        ])
        await send.writeStdin(csvLines(0..<3_000))
        // stdin stays open, as from a gateway. Interrupt once every reading is durable and the client knows it.
        try await waitForRows(daemon, 3_000)
        try await send.waitForStderr("acked 3,000 ")
        send.kill(SIGINT)
        let code = try await send.waitForExit(timeout: .seconds(30))
        #expect(code == 130, "stderr: \(send.stderr.suffix(3000))")
        #expect(send.stderr.contains("sluice: interrupted: waiting up to 5.0 s for 0 unacknowledged readings…"))
        #expect(send.stdout.contains("send: 3,000 readings read, 3,000 acknowledged"))
        #expect(send.stdout.contains("written           3,000"))
        #expect(send.stdout.contains("unacknowledged    0"))
        #expect(send.stdout.contains("bad input lines   0"))
        #expect(send.stderr.contains("sluice: interrupted by SIGINT: input not read to its end; 3,000 readings read, 3,000 acknowledged"))
        #expect(send.stderr.contains("\(stateFile) keeps this producer's id and next seq"))
        #expect(!send.stderr.contains("were not acknowledged"))
        #expect(try await daemon.rowCount() == 3_000)
        #expect(try await daemon.rowCount(distinct: true) == 3_000)

        // The same state file again: the same producer, on seqs after the first run's, so nothing new is
        // mistaken for a duplicate and nothing of the first run is written again.
        let again = try sluice(["send", "--server", "127.0.0.1:\(daemon.port)", "--state-file", stateFile])
        await again.writeStdin(csvLines(3_000..<4_000))
        again.closeStdin()
        #expect(try await again.waitForExit() == 0, "stderr: \(again.stderr.suffix(3000))")
        #expect(again.stdout.contains("0 acked as duplicates"))
        #expect(try await daemon.rowCount() == 4_000)
        #expect(try await daemon.rowCount(distinct: true) == 4_000)
        await daemon.stop()
    }

    @Test func sigtermWhileAcknowledgementsAreHeldBackWaitsFiveSecondsNamesWhatIsUnacknowledgedAndExits143() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_interrupt_sigterm")
        let daemon = try await Sluiced.start(databaseURL: url)
        let stateFile = NSTemporaryDirectory() + "sluice-e2e-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: stateFile) }
        let send = try sluice([
            "send", "--server", "127.0.0.1:\(daemon.port)", "--batch-size", "500", "--linger-ms", "20",
            "--progress-interval", "0.2", "--state-file", stateFile,
        ])
        await send.writeStdin(csvLines(0..<1_000))
        try await waitForRows(daemon, 1_000)
        try await send.waitForStderr("acked 1,000 ")
        // PostgreSQL held back: the next 2,000 readings reach the daemon but cannot commit, so no ack comes.
        let lock = try await TableLock.hold(url: url, table: "readings")
        await send.writeStdin(csvLines(1_000..<3_000))
        try await send.waitForStderr("sent 3,000 ")
        let signalled = ContinuousClock.now
        send.kill(SIGTERM)
        let code = try await send.waitForExit(timeout: .seconds(30))
        let waited = ContinuousClock.now - signalled
        #expect(code == 143, "stderr: \(send.stderr.suffix(3000))")
        #expect(waited >= .milliseconds(4_500) && waited < .seconds(15), "waited \(waited)")
        #expect(send.stderr.contains("sluice: interrupted: waiting up to 5.0 s for 2,000 unacknowledged readings…"))
        #expect(send.stdout.contains("send: 3,000 readings read, 1,000 acknowledged"))
        #expect(send.stdout.contains("unacknowledged    2,000"))
        #expect(send.stderr.contains("interrupted by SIGTERM"))
        #expect(send.stderr.contains("sluice: 2,000 readings were not acknowledged within 5.0 s: they were not delivered as far as sluice knows"))
        #expect(send.stderr.contains("the 2,000 unacknowledged readings are not in it, so a re-run does not send them"))
        await lock.release()
        // The daemon had them: it commits them once PostgreSQL moves (hence "as far as sluice knows"), each
        // exactly once.
        try await waitForRows(daemon, 3_000)
        #expect(try await daemon.rowCount() == 3_000)
        #expect(try await daemon.rowCount(distinct: true) == 3_000)
        await daemon.stop()
    }

    @Test func aSecondCtrlCExitsAtOnceWithoutWaitingForAcknowledgements() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_interrupt_twice")
        let daemon = try await Sluiced.start(databaseURL: url)
        let lock = try await TableLock.hold(url: url, table: "readings")
        let send = try sluice([
            "send", "--server", "127.0.0.1:\(daemon.port)", "--batch-size", "500", "--linger-ms", "20",
            "--progress-interval", "0.2",
        ])
        await send.writeStdin(csvLines(0..<1_000))
        try await send.waitForStderr("sent 1,000 ")
        send.kill(SIGINT)
        try await send.waitForStderr("waiting up to 5.0 s for 1,000 unacknowledged readings")
        let again = ContinuousClock.now
        send.kill(SIGINT)
        let code = try await send.waitForExit(timeout: .seconds(30))
        #expect(code == 130)
        // "At once" is proven by what is missing, not by a tight clock (a loaded CI machine can take seconds
        // to reap a process): waiting out the 5 s would have printed the summary.
        #expect(ContinuousClock.now - again < .seconds(10))
        #expect(!send.stdout.contains("readings read"), "stdout: \(send.stdout)")
        #expect(send.stderr.contains("sluice: SIGINT again: exiting at once without waiting for acknowledgements"))
        await lock.release()
        await daemon.stop()
    }
}

/// Waits until the daemon's table holds at least `count` rows (or 60 s pass).
private func waitForRows(_ daemon: Sluiced, _ count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while try await daemon.rowCount() < count, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
    }
}
