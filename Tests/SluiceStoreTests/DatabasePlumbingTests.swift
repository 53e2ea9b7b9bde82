import SluiceTestSupport
import Testing

/// Proves the plumbing CI relies on: tools/test started PostgreSQL and told the tests where it is.
@Suite struct DatabasePlumbingTests {
    @Test func theTestClusterAnswersOverARealConnection() throws {
        let connection = try TestConnection(url: try TestDatabase.url)
        #expect(try connection.scalar("SELECT 40 + 2") == 42)
        let version = try connection.scalar("SELECT current_setting('server_version_num')::int")
        #expect(version >= 130_000, "PostgreSQL 13 or newer (declarative partitioning, GREATEST on conflict)")
    }

    @Test func aFreshDatabaseIsEmptyAndSeparate() async throws {
        let url = try await TestDatabase.freshDatabase(named: "sluice_plumbing")
        let connection = try TestConnection(url: url)
        try connection.query("CREATE TABLE t (x int)")
        try connection.query("INSERT INTO t VALUES (1), (2)")
        #expect(try connection.scalar("SELECT count(*) FROM t") == 2)
    }
}
