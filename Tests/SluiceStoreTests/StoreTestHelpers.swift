import Foundation
import Logging
import SluiceStore
import SluiceTestSupport

/// A logger that only lets warnings through, so test output stays readable.
func testLogger(_ label: String = "sluice-store-test") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .error
    return logger
}

/// Unix microseconds of now, for readings that land in today's partition.
func nowMicros() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

/// A pool on `url` with small reconnect delays, started.
func startedPool(
    url: String, writers: Int = 2, maxGroupReadings: Int = 20_000, queueCapacity: Int = 1_000_000
) async throws -> WriterPool {
    let pool = WriterPool(
        configuration: .init(
            databaseURL: url, writers: writers, maxGroupReadings: maxGroupReadings,
            queueCapacityReadings: queueCapacity, reconnectInitialDelay: 0.02, reconnectMaxDelay: 0.5),
        logger: testLogger())
    try await pool.start()
    return pool
}

/// `count` readings of one device, 1 ms apart from `start`, with values derived from the index.
func makeSeries(device: String, metric: String = "temperature", count: Int, start: Int64) -> RowSeries {
    RowSeries(
        deviceID: device, metric: metric, times: (0..<count).map { start + Int64($0) * 1_000 },
        values: (0..<count).map { Double($0) / 4 }, quality: [], site: "site-a", unit: "°C",
        enrichmentPartial: false)
}

/// A unique database name for one test (tests run in parallel).
func uniqueDatabaseName(_ prefix: String) -> String {
    "\(prefix)_\(UInt32.random(in: 0 ... .max))"
}

/// Collects completions from writer threads for assertions.
final class OutcomeLog: Sendable {
    private let entries = LockedArray()

    func record(_ producer: ProducerID, _ seq: UInt64, _ outcome: BatchOutcome) {
        entries.append((producer, seq, outcome))
    }

    var all: [(producer: ProducerID, seq: UInt64, outcome: BatchOutcome)] { entries.snapshot }
}

/// An array behind a lock. `@unchecked Sendable` is safe: `items` is only touched while `lock` is held.
final class LockedArray: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(producer: ProducerID, seq: UInt64, outcome: BatchOutcome)] = []

    func append(_ item: (producer: ProducerID, seq: UInt64, outcome: BatchOutcome)) {
        lock.lock()
        defer { lock.unlock() }
        items.append(item)
    }

    var snapshot: [(producer: ProducerID, seq: UInt64, outcome: BatchOutcome)] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

/// Waits for `count` callback completions without blocking the cooperative pool.
final class CompletionCounter: Sendable {
    private let group = DispatchGroup()

    func expect(_ count: Int = 1) { for _ in 0..<count { group.enter() } }
    func done() { group.leave() }

    /// Waits (on a thread of its own) until every expected completion arrived or `seconds` passed.
    func wait(seconds: Double) async -> Bool {
        let group = self.group
        return await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: group.wait(timeout: .now() + seconds) == .success) }.start()
        }
    }
}

/// A PostgreSQL cluster of the test's own in a temporary directory, for tests that restart the database.
func makeOwnCluster(_ name: String) throws -> (cluster: PostgresCluster, directory: String) {
    let environment = ProcessInfo.processInfo.environment
    guard let bin = environment["SLUICE_TEST_PG_BINDIR"] else {
        throw TestSetupError("SLUICE_TEST_PG_BINDIR is not set: run the suite with tools/test")
    }
    let directory = NSTemporaryDirectory() + "sluice-\(name)-\(UInt32.random(in: 0 ... .max))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    // The run-as user (postgres) must be able to reach the data directory inside.
    chmod(directory, 0o755)
    let cluster = PostgresCluster(
        dataDirectory: directory + "/data", port: nil, binDirectory: bin, runAsUser: environment["SLUICE_TEST_PG_USER"],
        logger: testLogger())
    return (cluster, directory)
}

/// A started pool whose connections carry `applicationName`, so a test can find (and terminate) exactly
/// its writers' backends in `pg_stat_activity`.
func startedPool(
    url: String, writers: Int, applicationName: String, maxGroupReadings: Int = 20_000,
    stallErrorAfter: Double = 60
) async throws -> WriterPool {
    let pool = WriterPool(
        configuration: .init(
            databaseURL: url, writers: writers, maxGroupReadings: maxGroupReadings, reconnectInitialDelay: 0.02,
            reconnectMaxDelay: 0.3, applicationName: applicationName, stallErrorAfter: stallErrorAfter),
        logger: testLogger())
    try await pool.start()
    return pool
}

/// A unique application_name for one test's pool.
func uniqueApplicationName(_ prefix: String) -> String { "\(prefix)-\(UInt32.random(in: 0 ... .max))" }

/// Waits until `pool` reports a stall whose SQLSTATE is `sqlState`; the stall it saw, nil after `seconds`.
/// Polls the pool's own state: no sleeping for a guessed time.
func stall(of pool: WriterPool, sqlState: String?, within seconds: Double = 60) async throws -> WriterStall? {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if let stall = pool.stall, stall.sqlState == sqlState { return stall }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    return nil
}

/// Terminates the backends of the pool named `applicationName` (not the test's own connections).
func terminateBackends(of applicationName: String, via connection: TestConnection) throws {
    try connection.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(applicationName)'")
}
