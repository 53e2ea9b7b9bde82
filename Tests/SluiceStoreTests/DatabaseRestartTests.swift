import Foundation
import SluiceStore
import SluiceTestSupport
import Testing

/// PostgreSQL restarting mid-stream loses nothing and doubles nothing.
@Suite(.timeLimit(.minutes(3))) struct DatabaseRestartTests {
    @Test(arguments: [PostgresCluster.StopMode.fast, .immediate])
    func aRestartWhileWritingLeavesEveryReadingExactlyOnce(mode: PostgresCluster.StopMode) async throws {
        let (cluster, directory) = try makeOwnCluster("restart-\(mode.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await cluster.start()
        do {
            try await writeThroughARestart(cluster: cluster, mode: mode)
        } catch {
            try? await cluster.stop(mode: .immediate)
            throw error
        }
        try await cluster.stop(mode: .immediate)
    }

    private func writeThroughARestart(cluster: PostgresCluster, mode: PostgresCluster.StopMode) async throws {
        let pool = try await startedPool(url: cluster.url, writers: 2, maxGroupReadings: 5_000)
        let producers = (0..<4).map { _ in ProducerID.random() }
        let rounds = 30
        let perBatch = 1_000  // 4 × 30 × 1000 = 120k readings
        let start = nowMicros()
        func batch(_ producer: Int, _ seq: UInt64) -> WriteBatch {
            WriteBatch(
                producer: producers[producer], seq: seq,
                series: [makeSeries(device: "dev-\(producer)", count: perBatch, start: start + Int64(seq) * 10_000_000)])
        }
        let log = OutcomeLog()
        let counter = CompletionCounter()
        counter.expect(producers.count * rounds)
        let restart = Task { () -> Int in
            // Restart once a few batches have committed, while the rest are still being submitted and written.
            while pool.stats.committedBatches < 12 { try await Task.sleep(nanoseconds: 5_000_000) }
            let committedBefore = pool.stats.committedBatches
            try await cluster.restart(mode: mode)
            return committedBefore
        }
        for seq in 1...UInt64(rounds) {
            for producer in producers.indices {
                pool.submit(batch(producer, seq)) { outcome in
                    log.record(producers[producer], seq, outcome)
                    counter.done()
                }
            }
            try await Task.sleep(nanoseconds: 15_000_000)
        }
        let committedBeforeRestart = try await restart.value
        #expect(await counter.wait(seconds: 90), "every batch completes after the restart")
        #expect(committedBeforeRestart < producers.count * rounds / 2, "the restart happened mid-stream")
        // What a client does after reconnecting: resend what it is unsure of. All of it is already there.
        for seq in [1, 10, 20, 30] as [UInt64] {
            #expect(await pool.submit(batch(0, seq)) == .duplicate(accepted: perBatch, rejected: 0))
        }
        let stats = pool.stats
        await pool.shutdown()

        let outcomes = log.all
        #expect(outcomes.count == producers.count * rounds)
        #expect(outcomes.allSatisfy { $0.outcome == .committedWhole || $0.outcome.isDuplicate }, "\(outcomes.filter { $0.outcome != .committedWhole && !$0.outcome.isDuplicate }.prefix(3))")
        for producer in producers {
            #expect(outcomes.filter { $0.producer == producer }.map(\.seq) == Array(1...UInt64(rounds)))
        }
        #expect(stats.writerErrors > 0 || stats.reconnects > 0, "the restart was noticed")
        let connection = try TestConnection(url: cluster.url)
        let total = producers.count * rounds * perBatch
        #expect(try connection.scalar("SELECT count(*) FROM readings") == total)
        #expect(try connection.scalar("SELECT count(DISTINCT (device_id, time)) FROM readings") == total)
        #expect(try connection.scalar("SELECT min(committed_seq) FROM producers") == rounds)
    }
}

/// PostgreSQL gone for good while draining: shutdown gives up after its timeout, with a clear outcome.
@Suite(.timeLimit(.minutes(3))) struct DrainTimeoutTests {
    @Test func shutdownFailsWhatItCannotCommitOnceTheDrainTimeoutPasses() async throws {
        let (cluster, directory) = try makeOwnCluster("drain")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await cluster.start()
        let pool = WriterPool(
            configuration: .init(
                databaseURL: cluster.url, writers: 2, reconnectInitialDelay: 0.02, reconnectMaxDelay: 0.2,
                drainTimeout: 1),
            logger: testLogger())
        do {
            try await pool.start()
            try await cluster.stop(mode: .immediate)
        } catch {
            try? await cluster.stop(mode: .immediate)
            throw error
        }
        let producer = ProducerID.random()
        let log = OutcomeLog()
        for seq in 1...UInt64(3) {
            pool.submit(WriteBatch(producer: producer, seq: seq, series: [makeSeries(device: "d", count: 5, start: nowMicros())])) {
                log.record(producer, seq, $0)
            }
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(pool.stats.databaseReachable == false)
        #expect(pool.stats.inFlightReadings == 15)
        let started = Date()
        await pool.shutdown()
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(log.all.map(\.seq) == [1, 2, 3])
        for entry in log.all {
            guard case .failed(let message) = entry.outcome else {
                Issue.record("expected .failed, got \(entry.outcome)")
                continue
            }
            #expect(message.contains("not committed") && message.contains("resend"))
        }
    }
}

/// Local clusters: first start, clear errors.
@Suite(.timeLimit(.minutes(3))) struct PostgresClusterTests {
    @Test func missingServerProgramsAreNamedInTheError() async throws {
        let cluster = PostgresCluster(
            dataDirectory: NSTemporaryDirectory() + "sluice-nobin-\(UInt32.random(in: 0 ... .max))", port: nil,
            binDirectory: "/nonexistent/bin", logger: testLogger())
        do {
            try await cluster.start()
            Issue.record("start should fail without initdb")
        } catch let error as StoreError {
            #expect("\(error)".contains("initdb") && "\(error)".contains("/nonexistent/bin"))
        }
    }

    @Test func aNewClusterStartsStopsAndKeepsItsDataAcrossRestarts() async throws {
        let (cluster, directory) = try makeOwnCluster("cluster")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await cluster.start()
        do {
            // The private socket, never TCP (DESIGN §4: reachable only by sluiced's own user and root).
            #expect(cluster.url.hasPrefix("postgresql://sluice@%2F") && cluster.url.hasSuffix(":\(cluster.port)/postgres"))
            #expect(!cluster.url.contains("127.0.0.1"))
            try TestConnection(url: cluster.url).query("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
            try await cluster.start()  // already running: nothing to do
            try await cluster.restart(mode: .immediate)
            #expect(try TestConnection(url: cluster.url).scalar("SELECT count(*) FROM kept") == 1)
            try await cluster.stop()
            // (Not TestConnection: its failing init frees the libpq handle twice.)
            let reader = DeviceRegistryReader(databaseURL: cluster.url, logger: testLogger())
            await #expect(throws: StoreError.self) { try await reader.loadAll() }
            try await cluster.stop()  // already stopped: nothing to do
        } catch {
            try? await cluster.stop(mode: .immediate)
            throw error
        }
    }
}

/// A data directory the run-as user cannot reach is reported as such (only meaningful when we run as root).
@Suite struct PostgresClusterPermissionTests {
    @Test func anUnreachableDataDirectoryIsExplained() async throws {
        guard geteuid() == 0 else { return }  // as another user there is no user switch to check
        let parent = NSTemporaryDirectory() + "sluice-private-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: parent) }
        chmod(parent, 0o700)  // root only
        let cluster = PostgresCluster(
            dataDirectory: parent + "/data", port: nil,
            binDirectory: ProcessInfo.processInfo.environment["SLUICE_TEST_PG_BINDIR"],
            runAsUser: ProcessInfo.processInfo.environment["SLUICE_TEST_PG_USER"], logger: testLogger())
        do {
            try await cluster.start()
            try? await cluster.stop(mode: .immediate)
            Issue.record("start should fail: the run-as user cannot reach \(parent)")
        } catch let error as StoreError {
            #expect("\(error)".contains("cannot reach") && "\(error)".contains(parent))
        }
    }
}
