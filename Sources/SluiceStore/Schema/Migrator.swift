/// Brings a database's schema up to `Migrations.all`, safely when several daemons start at once.
enum Migrator {
    /// Applies every migration the database lacks, in one transaction holding an advisory lock: a second
    /// daemon starting at the same moment waits for the first, then finds nothing left to do. Returns the
    /// versions it applied. A database migrated past the newest version known here is refused
    /// (`StoreError.schemaTooNew`): an older daemon must not write into a schema it does not know.
    @discardableResult
    static func migrate(_ connection: PGConnection) throws -> [Int] {
        do {
            try connection.execute(
                """
                BEGIN;
                SELECT pg_advisory_xact_lock(\(Migrations.lockKey));
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version int PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                );
                """)
            let applied = Set(try connection.query("SELECT version FROM schema_migrations").compactMap { $0[0].flatMap { Int($0) } })
            let known = Migrations.all.map(\.version).max() ?? 0
            if let found = applied.max(), found > known {
                throw StoreError.schemaTooNew(found: found, known: known)
            }
            var newlyApplied: [Int] = []
            for migration in Migrations.all where !applied.contains(migration.version) {
                try connection.execute(migration.sql)
                try connection.execute("INSERT INTO schema_migrations (version) VALUES (\(migration.version))")
                newlyApplied.append(migration.version)
            }
            guard try connection.commandTag("COMMIT") == "COMMIT" else {
                throw PGError(sqlState: nil, message: "schema migration transaction was rolled back", connectionBroken: false)
            }
            return newlyApplied
        } catch {
            if connection.isHealthy { try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    /// Creates the daily partitions of `readings` around today that are missing; returns how many it made.
    @discardableResult
    static func ensurePartitions(_ connection: PGConnection, daysBack: Int, daysAhead: Int) throws -> Int {
        let rows = try connection.query("SELECT sluice_ensure_readings_partitions(\(daysBack), \(daysAhead))")
        return rows.first?.first.flatMap { $0.flatMap { Int($0) } } ?? 0
    }
}
