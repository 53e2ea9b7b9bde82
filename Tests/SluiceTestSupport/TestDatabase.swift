import CLibPQ

#if canImport(Glibc)
    import Glibc
#endif

/// The private PostgreSQL that `tools/test` started for this run, reached through libpq.
///
/// Tests use it to set up and inspect state directly (row counts, locks); they never fake the database.
public enum TestDatabase {
    /// libpq URL of the test cluster. `tools/test` exports `SLUICE_TEST_DATABASE_URL`; running `swift test`
    /// without it is a setup mistake, reported as such rather than skipped.
    public static var url: String {
        get throws {
            guard let value = getenv("SLUICE_TEST_DATABASE_URL") else {
                throw TestSetupError(
                    "SLUICE_TEST_DATABASE_URL is not set: run the suite with tools/test, which starts PostgreSQL")
            }
            return String(cString: value)
        }
    }

    /// A fresh database (dropped first if it exists) on the test cluster, so tests do not see each other's
    /// rows; returns its URL.
    ///
    /// Its libpq calls run on a thread of their own, never on the cooperative pool (two threads on a two-core
    /// machine): nearly every test starts with this, and sixty of them queued on the pool at the start of a
    /// run blocked it for seconds, so another test's connection sat unwritten past the daemon's handshake
    /// deadline ("I/O on closed channel"). tools/test also creates empty databases ahead, during the build
    /// (`sluice_test_pool`): this claims one and renames it, and only creates one when the pool is empty.
    public static func freshDatabase(named name: String) async throws -> String {
        try await onOwnThread { try freshDatabaseBlocking(named: name) }
    }

    private static func freshDatabaseBlocking(named name: String) throws -> String {
        let admin = try TestConnection(url: url)
        _ = try admin.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        let claimed = try? admin.query(
            """
            DELETE FROM sluice_test_pool WHERE name = (
              SELECT name FROM sluice_test_pool ORDER BY name LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING name
            """)
        if let spare = claimed?.first?.first ?? nil,
            (try? admin.query("ALTER DATABASE \(spare) RENAME TO \(name)")) != nil
        {
            return try urlReplacingDatabase(with: name)
        }
        _ = try admin.query("CREATE DATABASE \(name)")
        return try urlReplacingDatabase(with: name)
    }

    /// The test cluster's URL pointing at database `name`.
    public static func urlReplacingDatabase(with name: String) throws -> String {
        let base = try url
        guard let slash = base.lastIndex(of: "/") else { return base + "/" + name }
        return String(base[...slash]) + name
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A blocking libpq connection for test setup and assertions only (tests own their thread).
public final class TestConnection {
    private let connection: OpaquePointer

    public init(url: String) throws {
        guard let connection = PQconnectdb(url) else { throw TestSetupError("PQconnectdb returned NULL") }
        if PQstatus(connection) != CONNECTION_OK {
            let message = String(cString: PQerrorMessage(connection))
            PQfinish(connection)
            throw TestSetupError("cannot connect to \(url): \(message)")
        }
        // Assigned only once connected: a class whose stored properties are all set runs deinit (PQfinish)
        // when its init throws, which would free the handle twice.
        self.connection = connection
    }

    deinit { PQfinish(connection) }

    /// Runs `sql` and returns its rows as text (nil for NULL).
    @discardableResult
    public func query(_ sql: String) throws -> [[String?]] {
        guard let result = PQexec(connection, sql) else { throw TestSetupError("PQexec returned NULL") }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            throw TestSetupError("\(sql): \(String(cString: PQresultErrorMessage(result)))")
        }
        var rows: [[String?]] = []
        for r in 0..<PQntuples(result) {
            var row: [String?] = []
            for c in 0..<PQnfields(result) {
                row.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
            }
            rows.append(row)
        }
        return rows
    }

    /// The first column of the first row, as an integer.
    public func scalar(_ sql: String) throws -> Int {
        guard let text = try query(sql).first?.first ?? nil, let value = Int(text) else {
            throw TestSetupError("\(sql): expected one integer")
        }
        return value
    }
}
