// sluice-store-bench: the same generated rows written by raw binary COPY (1 and N connections, pre-encoded,
// fixed-size transactions) and by the WriterPool (N writers), in one run; prints rows/s and the ratio.
//
//   sluice-store-bench --url postgresql://sluice@127.0.0.1:5432/postgres [--rows 2000000] [--writers 2]
//                      [--batch-readings 1000] [--txn-rows 10000] [--producers 64] [--repeat 3] [--only raw]
//
// --only raw measures raw binary COPY with --writers connections alone and ends with a line
// `raw_copy_rows_per_second=N` (tools/bench uses it as the reference of its run).
//
// Each measurement runs --repeat times, interleaved (raw 1, raw N, pool, raw 1, ...), into an emptied table
// after a CHECKPOINT; the best of each is reported, since a shared machine only ever slows a run down.
//
// tools/bench-store starts a private PostgreSQL and runs this in release mode.
import CLibPQ
import Dispatch
import Foundation
import Logging
import SluiceStore

struct Options {
    var url = ProcessInfo.processInfo.environment["SLUICE_BENCH_DATABASE_URL"] ?? ""
    var rows = 2_000_000
    var writers = 2
    var batchReadings = 1_000
    var transactionRows = 10_000
    var producers = 64
    var seriesLength = 100
    var maxGroupReadings = 20_000
    var repeats = 3
    var rawOnly = false

    init(arguments: [String]) throws {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { throw BenchError("\(flag) needs a value") }
            func int() throws -> Int {
                guard let number = Int(value), number > 0 else { throw BenchError("\(flag): \(value) is not a positive integer") }
                return number
            }
            switch flag {
            case "--url": url = value
            case "--rows": rows = try int()
            case "--writers": writers = try int()
            case "--batch-readings": batchReadings = try int()
            case "--txn-rows": transactionRows = try int()
            case "--producers": producers = try int()
            case "--max-group-readings": maxGroupReadings = try int()
            case "--repeat": repeats = try int()
            case "--only":
                guard value == "raw" else { throw BenchError("--only takes \"raw\"") }
                rawOnly = true
            default: throw BenchError("unknown option \(flag)")
            }
        }
        guard !url.isEmpty else { throw BenchError("pass --url or set SLUICE_BENCH_DATABASE_URL") }
        guard batchReadings % seriesLength == 0, transactionRows % seriesLength == 0 else {
            throw BenchError("--batch-readings and --txn-rows must be multiples of \(seriesLength)")
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Blocking libpq for setup between runs (TRUNCATE, CHECKPOINT, counts); this process owns its thread.
final class Admin {
    private let connection: OpaquePointer
    init(url: String) throws {
        guard let connection = PQconnectdb(url), PQstatus(connection) == CONNECTION_OK else {
            throw BenchError("cannot connect to \(url)")
        }
        self.connection = connection
    }
    deinit { PQfinish(connection) }
    @discardableResult
    func exec(_ sql: String) throws -> String? {
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            throw BenchError("\(sql): \(String(cString: PQresultErrorMessage(result)))")
        }
        return status == PGRES_TUPLES_OK && PQntuples(result) > 0 ? String(cString: PQgetvalue(result, 0, 0)) : nil
    }
}

/// Runs blocking `body` on a thread of its own and awaits it.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

@main
struct StoreBench {
    static func main() async {
        do {
            try await run(try Options(arguments: CommandLine.arguments))
        } catch {
            FileHandle.standardError.write(Data("sluice-store-bench: \(error)\n".utf8))
            exit(1)
        }
    }

    static func run(_ options: Options) async throws {
        var logger = Logger(label: "sluice-store-bench")
        logger.logLevel = .warning

        // The rows: `seriesCount` series of `seriesLength` readings, 1 ms apart, within the last hour.
        let seriesCount = options.rows / options.seriesLength
        let start = Int64(Date().timeIntervalSince1970 * 1_000_000) - 3_600_000_000
        let series: [RowSeries] = (0..<seriesCount).map { index in
            let base = start + Int64(index / 1_000) * Int64(options.seriesLength) * 1_000
            return RowSeries(
                deviceID: "bench-device-\(index % 1_000)", metric: "temperature",
                times: (0..<options.seriesLength).map { base + Int64($0) * 1_000 },
                values: (0..<options.seriesLength).map { 20 + Double(($0 * 37 + index) % 1_000) / 100 },
                quality: [], site: "site-\(index % 7)", unit: "°C", enrichmentPartial: false)
        }
        let rows = seriesCount * options.seriesLength
        let perTransaction = options.transactionRows / options.seriesLength
        let encodeStart = DispatchTime.now()
        let payloads = stride(from: 0, to: series.count, by: perTransaction).map {
            RawCopyReference.encodePayload(Array(series[$0..<min($0 + perTransaction, series.count)]))
        }
        let encodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - encodeStart.uptimeNanoseconds) / 1e9
        let perBatch = options.batchReadings / options.seriesLength
        let producers = (0..<options.producers).map { _ in ProducerID.random() }
        var nextSeq = [UInt64](repeating: 0, count: producers.count)
        var batches: [WriteBatch] = []
        for (number, first) in stride(from: 0, to: series.count, by: perBatch).enumerated() {
            let producer = number % producers.count
            nextSeq[producer] += 1
            batches.append(
                WriteBatch(
                    producer: producers[producer], seq: nextSeq[producer],
                    series: Array(series[first..<min(first + perBatch, series.count)])))
        }
        print("sluice-store-bench: \(rows) rows; raw COPY in \(payloads.count) transactions of \(options.transactionRows) rows;"
            + " pool: \(batches.count) batches of \(options.batchReadings) readings from \(options.producers) producers,"
            + " \(options.writers) writers, groups of ≤ \(options.maxGroupReadings) readings")

        // Schema first (the pool migrates), then each run into an empty table after a checkpoint.
        let configuration = WriterPool.Configuration(
            databaseURL: options.url, writers: options.writers, maxGroupReadings: options.maxGroupReadings,
            queueCapacityReadings: 1_000_000)
        let migrator = WriterPool(configuration: configuration, logger: logger)
        try await migrator.start()
        await migrator.shutdown()
        let admin = try Admin(url: options.url)
        func reset() throws {
            try admin.exec("TRUNCATE readings, producers")
            try admin.exec("CHECKPOINT")
        }
        func verify(_ name: String) throws {
            let count = Int(try admin.exec("SELECT count(*) FROM readings") ?? "") ?? -1
            guard count == rows else { throw BenchError("\(name): expected \(rows) rows in readings, found \(count)") }
        }

        if options.rawOnly {
            var best = Double.infinity
            for round in 1...options.repeats {
                try reset()
                let seconds = try await RawCopyReference.write(
                    payloads: payloads, databaseURL: options.url, connections: options.writers)
                try verify("raw COPY, \(options.writers) connections")
                print(String(format: "  round %d: raw COPY, %d connections: %.0f rows/s", round, options.writers, Double(rows) / seconds))
                best = min(best, seconds)
            }
            try reset()
            print(String(format: "raw_copy_rows_per_second=%.0f", Double(rows) / best))
            return
        }

        var raw1 = Double.infinity
        var rawN = Double.infinity
        var pool = Double.infinity
        for round in 1...options.repeats {
            try reset()
            let oneConnection = try await RawCopyReference.write(payloads: payloads, databaseURL: options.url, connections: 1)
            try verify("raw COPY, 1 connection")
            try reset()
            let nConnections = try await RawCopyReference.write(
                payloads: payloads, databaseURL: options.url, connections: options.writers)
            try verify("raw COPY, \(options.writers) connections")
            try reset()
            let writerPool = try await poolRun(batches: batches, configuration: configuration, logger: logger)
            try verify("writer pool")
            print(String(format: "  round %d: raw 1 conn %.2f s, raw %d conns %.2f s, pool %.2f s (ratio %.3f)",
                         round, oneConnection, options.writers, nConnections, writerPool, nConnections / writerPool))
            raw1 = min(raw1, oneConnection)
            rawN = min(rawN, nConnections)
            pool = min(pool, writerPool)
        }

        func rate(_ seconds: Double) -> String { String(format: "%10.0f rows/s  (%.2f s)", Double(rows) / seconds, seconds) }
        print("best of \(options.repeats):")
        print("raw COPY, 1 connection:        \(rate(raw1))")
        print("raw COPY, \(options.writers) connections:       \(rate(rawN))")
        print("WriterPool, \(options.writers) writers:         \(rate(pool))")
        print(String(format: "ratio pool / raw COPY (%d conns): %.3f", options.writers, rawN / pool))
        print(String(format: "(binary COPY encoding alone, 1 thread: %.0f rows/s as the pool does it; %.0f rows/s into fresh payloads)",
                     Double(rows) / RawCopyReference.encodingSeconds(series), Double(rows) / encodeSeconds))
    }

    /// Submits every batch as fast as the pool takes them, keeping at most ~200k readings in flight (what the
    /// flow controller's credit does in the daemon); returns seconds from the first submit to the last commit.
    static func poolRun(batches: [WriteBatch], configuration: WriterPool.Configuration, logger: Logger) async throws
        -> Double
    {
        let pool = WriterPool(configuration: configuration, logger: logger)
        try await pool.start()
        let inFlightBatches = max(1, 200_000 / max(1, batches.first?.readingCount ?? 1))
        let elapsed = try await onOwnThread { () throws -> Double in
            let credit = DispatchSemaphore(value: inFlightBatches)
            let done = DispatchGroup()
            let failures = FailureCounter()
            let started = DispatchTime.now()
            for batch in batches {
                credit.wait()
                done.enter()
                pool.submit(batch) { outcome in
                    if !outcome.isCommitted { failures.record(outcome) }
                    credit.signal()
                    done.leave()
                }
            }
            done.wait()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            if let first = failures.first { throw BenchError("a batch was not committed: \(first)") }
            return seconds
        }
        await pool.shutdown()
        return elapsed
    }
}

/// The first non-committed outcome, if any (completions run on writer threads).
final class FailureCounter: Sendable {
    private let lock = NSLock()
    // Safe: only read or written while holding `lock`.
    nonisolated(unsafe) private var outcome: BatchOutcome?
    func record(_ outcome: BatchOutcome) {
        lock.lock()
        defer { lock.unlock() }
        if self.outcome == nil { self.outcome = outcome }
    }
    var first: BatchOutcome? {
        lock.lock()
        defer { lock.unlock() }
        return outcome
    }
}
