import Foundation
import SluiceTestSupport
import Testing

/// `sluice replay` interrupted as a user would (Ctrl-C, SIGTERM, Ctrl-C twice) in the middle of a paced
/// replay, against a real `sluiced` and PostgreSQL.
///
/// The recording has three blocks of 500 readings: one due at once, one `gap` seconds later (so the replay
/// is paced, not a burst), and one an hour later, which an interrupted replay must never send.
@Suite struct ReplayInterruptEndToEndTests {
    @Test func ctrlCWhileAPacedReplayWaitsForItsNextReadingExits130WithTheSummaryAndEachReadingWrittenOnce() async throws {
        let daemon = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_replay_interrupt_sigint"))
        let file = try recording(gap: 1)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let started = ContinuousClock.now
        let replay = try sluice(replayArguments(file, daemon))
        try await waitForRows(daemon, 1_000)
        // The second block went out about a second after the first: the replay is paced.
        #expect(ContinuousClock.now - started >= .milliseconds(950))
        try await replay.waitForStderr("acked 1,000 ")
        // Now it waits an hour for the third block's time to come.
        let signalled = ContinuousClock.now
        replay.kill(SIGINT)
        let code = try await replay.waitForExit(timeout: .seconds(30))
        #expect(code == 130, "stderr: \(replay.stderr.suffix(3000))")
        // Well before the third block's hour: the wait for it was cancelled.
        #expect(ContinuousClock.now - signalled < .seconds(10))
        #expect(replay.stderr.contains("sluice: interrupted: waiting up to 5.0 s for 0 unacknowledged readings…"))
        #expect(replay.stdout.contains("replay: 1,000 readings read, 1,000 acknowledged"), "stdout: \(replay.stdout)")
        #expect(replay.stdout.contains("written           1,000"))
        #expect(replay.stdout.contains("unacknowledged    0"))
        #expect(replay.stdout.contains("bad input lines   0"))
        #expect(
            replay.stderr.contains(
                "sluice: interrupted by SIGINT: input not read to its end; 1,000 readings read, 1,000 acknowledged"))
        #expect(!replay.stderr.contains("were not acknowledged"))
        // Replay keeps no state file, and the cancelled wait is not reported as an error.
        #expect(!replay.stderr.contains("keeps this producer's id"))
        #expect(!replay.stderr.contains("CancellationError"))
        #expect(try await daemon.rowCount() == 1_000)
        #expect(try await daemon.rowCount(distinct: true) == 1_000)
        await daemon.stop()
    }

    @Test func sigtermWhileAcknowledgementsAreHeldBackWaitsFiveSecondsNamesWhatIsUnacknowledgedAndExits143() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_replay_interrupt_sigterm")
        let daemon = try await Sluiced.start(databaseURL: url)
        // PostgreSQL holds back every row once the first block's 500 are in: a trigger waits for an advisory lock
        // the test holds from the start. (Taking a table lock after the first ack raced the second block on a
        // loaded machine, even 8 s later: it committed before the lock was taken.)
        let lock = try await TableLock.holdAdvisory(url: url, key: 4_242)
        try await onOwnThread {
            let connection = try TestConnection(url: url)
            try connection.query(
                """
                CREATE FUNCTION hold_after_first_block() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF (SELECT count(*) FROM readings) >= 500 THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
                  RETURN NEW;
                END $$
                """)
            try connection.query(
                "CREATE TRIGGER hold_after_first_block BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION hold_after_first_block()")
        }
        // 4 s between the blocks: the first commits alone, not in one transaction with the second.
        let file = try recording(gap: 4)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let replay = try sluice(replayArguments(file, daemon))
        try await waitForRows(daemon, 500)
        try await replay.waitForStderr("acked 500 ")
        // The second block reaches the daemon but cannot commit, so no ack comes.
        try await replay.waitForStderr("sent 1,000 ")
        let signalled = ContinuousClock.now
        replay.kill(SIGTERM)
        let code = try await replay.waitForExit(timeout: .seconds(30))
        let waited = ContinuousClock.now - signalled
        #expect(code == 143, "stderr: \(replay.stderr.suffix(3000))")
        #expect(waited >= .milliseconds(4_500) && waited < .seconds(15), "waited \(waited)")
        #expect(replay.stderr.contains("sluice: interrupted: waiting up to 5.0 s for 500 unacknowledged readings…"))
        #expect(replay.stdout.contains("replay: 1,000 readings read, 500 acknowledged"), "stdout: \(replay.stdout)")
        #expect(replay.stdout.contains("written           500"))
        #expect(replay.stdout.contains("unacknowledged    500"))
        #expect(replay.stderr.contains("sluice: interrupted by SIGTERM: input not read to its end; 1,000 readings read, 500 acknowledged"))
        #expect(
            replay.stderr.contains(
                "sluice: 500 readings were not acknowledged within 5.0 s: they were not delivered as far as sluice knows"))
        await lock.release()
        // The daemon had the second block: it commits it once PostgreSQL moves, each reading exactly once;
        // the third block was never sent.
        try await waitForRows(daemon, 1_000)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await daemon.rowCount() == 1_000)
        #expect(try await daemon.rowCount(distinct: true) == 1_000)
        await daemon.stop()
    }

    @Test func aSecondCtrlCEndsAnInterruptedReplayAtOnce() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_replay_interrupt_twice")
        let daemon = try await Sluiced.start(databaseURL: url)
        let lock = try await TableLock.hold(url: url, table: "readings")
        let file = try recording(gap: 3)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let replay = try sluice(replayArguments(file, daemon))
        try await replay.waitForStderr("sent 500 ")
        replay.kill(SIGINT)
        try await replay.waitForStderr("waiting up to 5.0 s for 500 unacknowledged readings")
        let again = ContinuousClock.now
        replay.kill(SIGINT)
        let code = try await replay.waitForExit(timeout: .seconds(30))
        #expect(code == 130)
        // "At once" is proven by what is missing, not by a tight clock (a loaded CI machine can take seconds
        // to reap a process): waiting out the 5 s would have printed the summary.
        #expect(ContinuousClock.now - again < .seconds(10))
        #expect(!replay.stdout.contains("readings read"), "stdout: \(replay.stdout)")
        #expect(replay.stderr.contains("sluice: SIGINT again: exiting at once without waiting for acknowledgements"))
        await lock.release()
        // Only the first block was ever sent: the second was not due yet when the replay was interrupted.
        try await waitForRows(daemon, 500)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await daemon.rowCount() == 500)
        await daemon.stop()
    }
}

/// A paced replay at the recording's own speed, re-stamped to now, with progress lines to wait for.
private func replayArguments(_ file: String, _ daemon: Sluiced) -> [String] {
    ["replay", file, "--shift-to-now", "--server", "127.0.0.1:\(daemon.port)", "--progress-interval", "0.2"]
}

/// A CSV recording from 2020: 500 readings (500 devices) at t0, 500 at t0 + `gap` s, 500 at t0 + 1 h.
private func recording(gap: Int64) throws -> String {
    let t0: Int64 = 1_600_000_000
    var text = ""
    for offset in [0, gap, 3_600] {
        for device in 0..<500 { text += "rec-\(device),temp_c,\(t0 + offset),\(20 + device % 10).5\n" }
    }
    return try temporaryFile(text)
}

/// Waits until the daemon's table holds at least `count` rows (or 60 s pass).
private func waitForRows(_ daemon: Sluiced, _ count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while try await daemon.rowCount() < count, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
    }
}
