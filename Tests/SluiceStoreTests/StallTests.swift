import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceStore

/// Errors that are not about the data stall the writer: it keeps the group, says why, retries, and
/// commits once PostgreSQL takes it again. Nothing fails, nothing is skipped, nothing is dead-lettered.
@Suite(.timeLimit(.minutes(3))) struct StallTests {
    func batch(_ producer: ProducerID, _ seq: UInt64, count: Int = 5, deadLetters: [DeadLetter] = []) -> WriteBatch {
        WriteBatch(
            producer: producer, seq: seq, series: [makeSeries(device: "dev-\(seq)", count: count, start: nowMicros())],
            deadLetters: deadLetters)
    }

    /// Submits seqs 1...count of one producer and returns their outcomes' log and a waiter.
    func submitAll(_ pool: WriterPool, _ producer: ProducerID, count: Int) -> (OutcomeLog, CompletionCounter) {
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(count)
        for seq in 1...UInt64(count) {
            pool.submit(batch(producer, seq)) { log.record(producer, seq, $0); counter.done() }
        }
        return (log, counter)
    }

    @Test func aReadOnlyDatabaseStallsTheWriterUntilItIsWritableAgain() async throws {
        let name = uniqueDatabaseName("store_read_only")
        let url = try await TestDatabase.freshDatabase(named: name)
        let application = uniqueApplicationName("ro")
        let pool = try await startedPool(url: url, writers: 1, applicationName: application, stallErrorAfter: 0)
        let admin = try TestConnection(url: url)
        // What a demoted primary looks like to new sessions; the writer's is ended so it reconnects into one.
        try admin.query("ALTER DATABASE \(name) SET default_transaction_read_only = on")
        try terminateBackends(of: application, via: admin)
        let producer = ProducerID.random()
        let (log, counter) = submitAll(pool, producer, count: 3)
        let seen = try await stall(of: pool, sqlState: "25006")
        #expect(seen?.reason.contains("read-only") == true, "\(String(describing: pool.stall))")
        #expect(log.all.isEmpty, "nothing completes while stalled")
        try admin.query("ALTER DATABASE \(name) RESET default_transaction_read_only")
        #expect(await counter.wait(seconds: 60))
        #expect(log.all.map(\.seq) == [1, 2, 3] && log.all.allSatisfy { $0.outcome == .committedWhole })
        #expect(pool.stall == nil && pool.stats.failedBatches == 0)
        await pool.shutdown()
        #expect(try admin.scalar("SELECT count(*) FROM readings") == 15)
        #expect(try admin.scalar("SELECT count(*) FROM dead_letters") == 0)
    }

    @Test func aLockTimeoutStallsTheWriterUntilTheLockIsReleased() async throws {
        let name = uniqueDatabaseName("store_lock_timeout")
        let url = try await TestDatabase.freshDatabase(named: name)
        let admin = try TestConnection(url: url)
        try admin.query("ALTER DATABASE \(name) SET lock_timeout = '100ms'")
        let pool = try await startedPool(url: url, writers: 1, applicationName: uniqueApplicationName("lock"))
        let producer = ProducerID.random()
        #expect(await pool.submit(batch(producer, 1)) == .committedWhole)
        try admin.query("BEGIN; SELECT 1 FROM producers FOR UPDATE")
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(2)
        for seq in [2, 3] as [UInt64] {
            pool.submit(batch(producer, seq)) { log.record(producer, seq, $0); counter.done() }
        }
        #expect(try await stall(of: pool, sqlState: "55P03")?.reason.contains("lock timeout") == true)
        #expect(log.all.isEmpty)
        try admin.query("COMMIT")
        #expect(await counter.wait(seconds: 60))
        #expect(log.all.map(\.seq) == [2, 3] && log.all.allSatisfy { $0.outcome == .committedWhole })
        #expect(try await pool.committedSeq(of: producer) == 3)
        await pool.shutdown()
    }

    @Test func aRevokedPermissionAndAMissingTableStallUntilFixed() async throws {
        let name = uniqueDatabaseName("store_permission")
        let url = try await TestDatabase.freshDatabase(named: name)
        // Migrate as the superuser, then write as a role whose rights can be taken away.
        let migrating = try await startedPool(url: url)
        await migrating.shutdown()
        let role = "sluice_writer_\(UInt32.random(in: 0 ... .max))"
        let admin = try TestConnection(url: url)
        try admin.query(
            """
            CREATE ROLE \(role) LOGIN;
            GRANT CREATE, USAGE ON SCHEMA public TO \(role);
            GRANT ALL ON ALL TABLES IN SCHEMA public TO \(role);
            REVOKE INSERT ON readings FROM \(role);
            """)
        let roleURL = url.replacingOccurrences(of: "://sluice@", with: "://\(role)@")
        #expect(roleURL != url)
        let pool = try await startedPool(url: roleURL, writers: 1, applicationName: uniqueApplicationName("perm"))
        let producer = ProducerID.random()
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(2)
        let letter = DeadLetter(deviceID: "d", metric: "m", timeMicros: 1, value: .nan, reasonCode: 1, reason: "NaN")
        for seq in [1, 2] as [UInt64] {
            pool.submit(batch(producer, seq, deadLetters: seq == 2 ? [letter] : [])) {
                log.record(producer, seq, $0)
                counter.done()
            }
        }
        #expect(try await stall(of: pool, sqlState: "42501")?.reason.contains("permission") == true)
        // A dropped (here: renamed) table is no reason to fail a batch either.
        try admin.query("ALTER TABLE dead_letters RENAME TO dead_letters_away")
        try admin.query("GRANT INSERT ON readings TO \(role)")
        #expect(try await stall(of: pool, sqlState: "42P01") != nil)
        try admin.query("ALTER TABLE dead_letters_away RENAME TO dead_letters")
        #expect(await counter.wait(seconds: 60))
        #expect(log.all.map(\.seq) == [1, 2] && log.all.allSatisfy { $0.outcome == .committedWhole })
        #expect(pool.stats.failedBatches == 0)
        await pool.shutdown()
        #expect(try admin.scalar("SELECT count(*) FROM readings") == 10)
        #expect(try admin.scalar("SELECT count(*) FROM dead_letters") == 1)
    }
}

/// An older sluiced never writes into a schema a newer one migrated.
@Suite(.timeLimit(.minutes(3))) struct SchemaVersionGuardTests {
    @Test func aDatabaseMigratedByANewerDaemonIsRefusedAtStart() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_schema_guard"))
        let first = try await startedPool(url: url, writers: 1)
        await first.shutdown()
        let known = Migrations.all.map(\.version).max() ?? 0
        try TestConnection(url: url).query("INSERT INTO schema_migrations (version) VALUES (\(known + 98))")
        let pool = WriterPool(configuration: .init(databaseURL: url, writers: 1), logger: testLogger())
        do {
            try await pool.start()
            Issue.record("start should refuse a schema at version \(known + 98)")
            await pool.shutdown()
        } catch let error as StoreError {
            #expect(error == .schemaTooNew(found: known + 98, known: known))
            #expect("\(error)".contains("version \(known + 98)") && "\(error)".contains("version \(known)"))
        }
        #expect(try TestConnection(url: url).scalar("SELECT max(version) FROM schema_migrations") == known + 98)
    }
}
