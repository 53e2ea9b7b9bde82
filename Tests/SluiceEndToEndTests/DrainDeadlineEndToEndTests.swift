import Foundation
import SluiceTestSupport
import Testing

/// SIGTERM while the database is stalled (a lock holds every write of `readings`, so batches stay queued):
/// sluiced still exits within its one drain deadline — connections and writers share it — with exit 75 and a
/// log line naming what was left unacknowledged.
@Suite(.timeLimit(.minutes(3))) struct DrainDeadlineEndToEndTests {
    @Test func sigtermWhileTheDatabaseStallsExitsWithinTheDeadlineNamingWhatIsUnacknowledged() async throws {
        let url = try await TestDatabase.freshDatabase(named: "e2e_drain_deadline")
        let stateDir = NSTemporaryDirectory() + "sluiced-e2e-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: stateDir) }
        let drainTimeout = 3.0
        let daemon = try await RunningProcess.sluiced(
            [
                "--listen", "127.0.0.1:0", "--http", "off", "--database-url", url, "--state-dir", stateDir,
                "--writers", "1", "--drain-timeout", "\(drainTimeout)",
            ], name: "sluiced")
        let port = try await daemon.waitForStderr(#"sluiced: listening on 127\.0\.0\.1:(\d+)"#)

        let lock = try await TableLock.hold(url: url, table: "readings")
        let file = try temporaryFile(csvLines(0..<5_000))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let send = try sluice(["send", file, "--server", "127.0.0.1:\(port)"])
        // Event-driven: a writer of this sluiced (this database: other tests' daemons wait on locks of their own)
        // waits on the lock, so batches are queued and unacknowledged.
        try await waitUntilAWriterWaitsOnALock(url: url)

        let signalled = ContinuousClock.now
        daemon.kill(SIGTERM)
        let code = try await daemon.waitForExit(timeout: .seconds(30))
        let took = ContinuousClock.now - signalled
        await lock.release()
        send.kill(SIGKILL)

        #expect(code == 75, "stderr: \(daemon.stderr.suffix(3000))")
        // The deadline plus the process's own teardown; far below the unit's TimeoutStopSec margin (10 s).
        #expect(took < .seconds(drainTimeout + 5), "took \(took)")
        #expect(daemon.stderr.contains("drain deadline passed with readings unacknowledged"), "\(daemon.stderr.suffix(3000))")
        let count = try #require(
            daemon.stderr.firstMatch(of: /unacknowledged_readings=(\d+)/).map { Int($0.1)! }, "\(daemon.stderr.suffix(3000))")
        #expect(count > 0)
        #expect(daemon.stderr.contains("readings unacknowledged (clients resend them); exit 75"))
    }

    private func waitUntilAWriterWaitsOnALock(url: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let waiting = try await onOwnThread {
                try TestConnection(url: url).scalar(
                    // A batch's COPY in this test's database, not writer 0's partition upkeep (which waits on the
                    // same lock) nor another test's daemon.
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        + "AND application_name = 'sluiced' AND wait_event_type = 'Lock' AND query LIKE '%COPY readings%'")
            }
            if waiting > 0 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSetupError("no sluiced writer waited on the lock within 60 s")
    }
}
