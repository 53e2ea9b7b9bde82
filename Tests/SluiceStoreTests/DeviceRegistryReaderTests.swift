import SluiceStore
import SluiceTestSupport
import Testing

/// The device registry enrichment reads.
@Suite(.timeLimit(.minutes(3))) struct DeviceRegistryReaderTests {
    @Test func loadAllAndLookupReturnTheRegisteredDevices() async throws {
        let url = try await TestDatabase.freshDatabase(named: uniqueDatabaseName("store_registry"))
        let pool = try await startedPool(url: url)  // creates the devices table
        await pool.shutdown()
        try TestConnection(url: url).query(
            #"""
            INSERT INTO devices (device_id, site, scale, "offset", unit) VALUES
                ('boiler-1', 'plant-a', 0.1, -40, '°C'), ('quote"back\slash', NULL, 1, 0, NULL);
            INSERT INTO devices (device_id) VALUES ('bare')
            """#)
        let reader = DeviceRegistryReader(databaseURL: url, logger: testLogger())
        let all = try await reader.loadAll()
        #expect(all.count == 3)
        #expect(all["boiler-1"] == DeviceInfo(site: "plant-a", scale: 0.1, offset: -40, unit: "°C"))
        #expect(all["bare"] == DeviceInfo(site: nil, scale: 1, offset: 0, unit: nil))
        let some = try await reader.lookup([#"quote"back\slash"#, "missing", "bare", "nul\0"])
        #expect(Set(some.keys) == [#"quote"back\slash"#, "bare"])
        #expect(try await reader.lookup([]).isEmpty)
    }

    @Test func anUnreachableRegistryThrowsInsteadOfHanging() async throws {
        let port = PostgresCluster(dataDirectory: "/nonexistent", port: nil, logger: testLogger()).port
        let reader = DeviceRegistryReader(databaseURL: "postgresql://sluice@127.0.0.1:\(port)/postgres", logger: testLogger())
        await #expect(throws: StoreError.self) { try await reader.lookup(["a"]) }
    }
}
