import Foundation
@testable import SluiceStore
import SluiceTestSupport
import Testing

/// Versioned migrations and time partitioning.
@Suite(.timeLimit(.minutes(3))) struct SchemaTests {
    @Test func migrationsAppliedTwiceAndByTwoPoolsAtOnceAreHarmless() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_migrate"))
        // Two daemons starting at the same moment on an empty database.
        async let first = startedPool(url: url)
        async let second = startedPool(url: url)
        let pools = try await [first, second]
        let producer = ProducerID.random()
        #expect(await pools[0].submit(WriteBatch(producer: producer, seq: 1, series: [makeSeries(device: "d", count: 3, start: nowMicros())])) == .committedWhole)
        #expect(await pools[1].submit(WriteBatch(producer: producer, seq: 1, series: [makeSeries(device: "d", count: 3, start: nowMicros())])) == .duplicate(accepted: 3, rejected: 0))
        for pool in pools { await pool.shutdown() }
        // And once more on the migrated database: nothing changes, the data stays.
        let third = try await startedPool(url: url)
        await third.shutdown()
        let connection = try TestConnection(url: url)
        #expect(
            try connection.query("SELECT version FROM schema_migrations ORDER BY version")
                == Migrations.all.map { ["\($0.version)"] })
        #expect(try connection.scalar("SELECT count(*) FROM readings") == 3)
        #expect(try connection.scalar("SELECT count(*) FROM producers") == 1)
    }

    @Test func readingsHasDailyPartitionsAroundTodayAndADefault() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_partitions"))
        let pool = try await startedPool(url: url)
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        let partitions = try connection.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                + "WHERE i.inhparent = 'readings'::regclass ORDER BY 1"
        ).compactMap { $0[0] }
        #expect(partitions.contains("readings_default"))
        #expect(partitions.filter { $0.hasPrefix("readings_p") }.count == 11)  // 7 back, today, 3 ahead
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd"
        formatter.timeZone = TimeZone(identifier: "UTC")
        #expect(partitions.contains("readings_p" + formatter.string(from: Date())))
        #expect(partitions.contains("readings_p" + formatter.string(from: Date().addingTimeInterval(3 * 86_400))))
    }

    @Test func aLaterPartitionTakesOverRowsThatLandedInTheDefault() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_default_move"))
        let pool = try await startedPool(url: url)
        let inFiveDays = nowMicros() + 5 * 86_400_000_000
        #expect(await pool.submit(WriteBatch(producer: .random(), seq: 1, series: [makeSeries(device: "d", count: 4, start: inFiveDays)])) == .committedWhole)
        await pool.shutdown()
        let connection = try TestConnection(url: url)
        #expect(try connection.scalar("SELECT count(*) FROM readings_default") == 4)
        #expect(try connection.scalar("SELECT sluice_ensure_readings_partitions(0, 6)") == 3)
        #expect(try connection.scalar("SELECT count(*) FROM readings_default") == 0)
        #expect(try connection.scalar("SELECT count(*) FROM readings") == 4)
        #expect(try connection.scalar("SELECT sluice_ensure_readings_partitions(0, 6)") == 0)
    }
}
