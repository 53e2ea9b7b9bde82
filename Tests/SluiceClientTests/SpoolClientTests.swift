import Foundation
import SluiceClient
import SluiceTestSupport
import Testing

/// The client with a spool, against the real server (in process) and the real PostgreSQL.
@Suite struct SpoolClientTests {
    func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "sluice-spool-client-\(UUID().uuidString)"
    }

    @Test func whatOneRunLeftInTheSpoolTheNextRunDeliversExactlyOnce() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let readings = recentReadings(devices: 4, perDevice: 500, device: "spooled")
        // The first run never reaches a server: everything it takes stays in the spool.
        var away = clientConfiguration([Endpoint(host: "127.0.0.1", port: 1)], batch: 250)
        away.spool = SpoolConfiguration(directory: dir, fsync: .always)
        let first = try await SluiceClient(configuration: away)
        try await first.send(Array(readings[..<1_000]), inputPosition: 1_000)
        try await first.send(Array(readings[1_000...]), inputPosition: 2_000)
        let held = await first.statistics
        #expect(held.spoolReadings == 2_000 && held.spoolBatches == 8 && held.spoolBytes > 0)
        await #expect(throws: ClientError.self) { try await first.close(timeout: .milliseconds(200)) }

        let server = try await TestServer.start(database: "client_spool_restart")
        var back = clientConfiguration([server.endpoint], batch: 250)
        back.spool = SpoolConfiguration(directory: dir, fsync: .interval(.milliseconds(50)))
        let second = try await SluiceClient(configuration: back)
        #expect(second.producer == first.producer, "the spool keeps the producer identity")
        let recovery = try #require(second.spoolRecovery)
        #expect(recovery.batches == 8 && recovery.readings == 2_000 && recovery.inputPosition == 2_000)
        print("spool: recovered \(recovery.batches) batches in \(recovery.duration)")
        try await second.flush(timeout: .seconds(60))
        let stats = await second.statistics
        #expect(stats.readingsAcked == 2_000 && stats.batchesResent == 8)
        #expect(stats.spoolReadings == 0 && stats.spoolBytes == 0, "acknowledged batches leave the spool")
        try await second.close()
        #expect(try server.rowCount("device_id LIKE 'spooled-%'") == 2_000)
        #expect(try server.distinctRowCount() == 2_000)
        await server.server.shutdown()
    }

    @Test func aFullSpoolStopsSendUntilAcknowledgementsFreeIt() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var away = clientConfiguration([Endpoint(host: "127.0.0.1", port: 1)], batch: 100)
        away.spool = SpoolConfiguration(directory: dir, maxBytes: 64 << 10, fsync: .never)
        let client = try await SluiceClient(configuration: away)
        // Far more than 64 KiB holds, however well zstd does (a 100-reading frame costs more than 36 bytes).
        let readings = recentReadings(devices: 10, perDevice: 30_000, device: "full")
        let sending = Task {
            for start in stride(from: 0, to: readings.count, by: 100) {
                try await client.send(Array(readings[start..<start + 100]))
            }
        }
        // Waits (without a deadline that load could break) until send is blocked on the full spool, or,
        // if the spool never filled, until everything was taken (then the expectations below fail).
        while true {
            let s = await client.statistics
            if s.spoolFull || s.readingsQueued == readings.count { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let stats = await client.statistics
        #expect(stats.spoolFull)
        #expect(stats.spoolBytes >= 64 << 10 && stats.spoolBytes < (64 << 10) + 4_096)
        #expect(stats.spoolReadings < readings.count, "reading stopped before the input ran out")
        print("spool: full at \(stats.spoolBytes) bytes holding \(stats.spoolReadings) readings")
        sending.cancel()
        try? await client.close(timeout: .milliseconds(100))
        _ = try? await sending.value
    }

    @Test func dropOldestMakesRoomAndCountsWhatItDropped() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var away = clientConfiguration([Endpoint(host: "127.0.0.1", port: 1)], batch: 100)
        away.spool = SpoolConfiguration(directory: dir, maxBytes: 64 << 10, fsync: .never, whenFull: .dropOldest)
        let client = try await SluiceClient(configuration: away)
        let readings = recentReadings(devices: 10, perDevice: 30_000, device: "drop")
        for start in stride(from: 0, to: readings.count, by: 100) {
            try await client.send(Array(readings[start..<start + 100]))
        }
        let stats = await client.statistics
        #expect(stats.spoolDroppedReadings > 0)
        #expect(stats.spoolReadings + stats.spoolDroppedReadings == readings.count, "every reading is held or counted as dropped")
        #expect(stats.spoolBytes < (64 << 10) + 4_096)
        try? await client.close(timeout: .milliseconds(100))
    }

    /// The drop-oldest policy against a daemon whose table is locked: the oldest batches are on the wire (held
    /// by the server, not yet committed) when the spool fills. Dropping them would count readings as dropped
    /// that then land; what is acknowledged plus what is dropped must be exactly what was sent, and the table
    /// must hold exactly what was acknowledged.
    @Test func dropOldestNeverCountsASentBatchAsDropped() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try await TestServer.start(database: "client_spool_drop_in_flight")
        let lock = try await TableLock.hold(url: server.databaseURL, table: "readings")
        var configuration = clientConfiguration([server.endpoint], batch: 100)
        configuration.spool = SpoolConfiguration(directory: dir, maxBytes: 64 << 10, fsync: .never, whenFull: .dropOldest)
        let client = try await SluiceClient(configuration: configuration)
        while !(await client.statistics.connected) { try await Task.sleep(for: .milliseconds(20)) }
        let readings = recentReadings(devices: 10, perDevice: 30_000, device: "in-flight")
        for start in stride(from: 0, to: readings.count, by: 100) {
            try await client.send(Array(readings[start..<start + 100]))
        }
        let held = await client.statistics
        #expect(held.readingsSent > 0, "batches went on the wire while the lock held them uncommitted")
        #expect(held.spoolDroppedReadings > 0)
        #expect(held.readingsAcked == 0)
        await lock.release()
        try await client.flush(timeout: .seconds(120))
        let stats = await client.statistics
        try await client.close()
        let stored = try server.rowCount("device_id LIKE 'in-flight-%'")
        print("spool drop-oldest: \(stats.readingsAcked) acked, \(stats.spoolDroppedReadings) dropped, \(stored) stored")
        #expect(stats.readingsAcked + stats.spoolDroppedReadings == readings.count, "every reading is acked or counted as dropped")
        #expect(stored == stats.readingsAcked, "the table holds exactly what was acknowledged: nothing counted as dropped landed")
        #expect(stats.spoolReadings == 0 && stats.spoolBytes == 0)
        await server.server.shutdown()
    }
}
