import ArgumentParser
import Foundation
import SluiceClient
import SluiceCore
import Synchronization

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Send synthetic load and report throughput, ack latency, credit waits and wire size.",
        discussion: """
            Each connection is its own producer sending regular 1 Hz series (values at 0.01 resolution, a random \
            walk) for its share of --devices × --metrics. Closed loop by default: each connection sends as fast \
            as credit allows, and latency is measured from a batch's transmission to its ack. With --rate the \
            load is open loop: batches are scheduled at a fixed rate and latency is measured from the scheduled \
            time, so a server that falls behind shows it (no coordinated omission).

            Examples:
              sluice bench --connections 8 --batch-size 1000 --duration 10
              sluice bench --connections 64 --batch-size 1 --duration 10
              sluice bench --rate 100000 --duration 30 --json
              sluice bench --count 1000000 --no-compression
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Concurrent connections (producers).")
    var connections = 4

    @Option(help: "Devices in total, shared out among the connections.")
    var devices = 100

    @Option(help: "Metrics per device.")
    var metrics = 1

    @Option(help: "Readings per batch.")
    var batchSize = 1_000

    @Option(help: "Seconds to send for (default 10 unless --count is given).")
    var duration: Double?

    @Option(help: "Readings to send in total, instead of a duration.")
    var count: Int?

    @Option(help: "Open loop: readings per second in total, scheduled evenly.")
    var rate: Double?

    @Option(help: "Closed loop: batches each connection keeps outstanding (queued or awaiting their ack).")
    var window = 32

    @Option(help: "Seconds between progress lines.")
    var progressInterval: Double = 1

    @Flag(help: "Print the result as JSON on stdout.")
    var json = false

    func validate() throws {
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard devices >= 1, metrics >= 1 else { throw ValidationError("--devices and --metrics must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if duration != nil && count != nil { throw ValidationError("give --duration or --count, not both") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        guard window >= 1 else { throw ValidationError("--window must be at least 1") }
    }

    func run() async throws {
        let endpoints = try connection.endpoints()
        let tally = BenchTally()
        let seriesPerConnection = max(1, devices * metrics / connections)
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let limit: BenchLimit = count.map { .readings(max(1, $0 / connections)) } ?? .seconds(duration ?? 10)
        let interval = rate.map { Double(batchSize) / ($0 / Double(connections)) }

        var clients: [SluiceClient] = []
        for _ in 0..<connections {
            let configuration = SluiceClientConfiguration(
                endpoints: endpoints, token: connection.resolvedToken, maxBatchReadings: batchSize,
                bufferCapacityBytes: 8 << 20, compression: !connection.noCompression, clientName: "sluice-bench",
                tls: connection.tls.configuration)
            clients.append(try await SluiceClient(configuration: configuration, logger: connection.logger()))
        }
        let start = ContinuousClock.now
        let progress = Task {
            var last = (start, 0)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64(progressInterval * 1000)))
                if Task.isCancelled { break }
                let now = ContinuousClock.now
                let acked = tally.readings.load(ordering: .relaxed)
                let r = Double(acked - last.1) / max((now - last.0).seconds, 0.001)
                last = (now, acked)
                await Console.shared.progress(
                    "bench: \(Format.duration((now - start).seconds))  acked \(Format.count(acked)) readings, \(Format.count(tally.batches.load(ordering: .relaxed))) batches  \(Format.rate(r)) readings/s")
            }
        }
        let workers = clients.enumerated().map { c, client in
            BenchWorker(
                client: client, tally: tally, openLoop: interval != nil, window: max(batchSize, window * batchSize),
                phase: Double(c) / Double(connections),
                series: (0..<seriesPerConnection).map { k in
                    let device = k / metrics
                    return SeriesState(deviceID: "bench-\(runID)-c\(c)-d\(device)", metric: "m\(k % metrics)")
                })
        }
        let results = await withTaskGroup(of: WorkerResult.self) { group in
            for worker in workers {
                group.addTask { await worker.run(batchSize: batchSize, limit: limit, interval: interval) }
            }
            var all: [WorkerResult] = []
            for await r in group { all.append(r) }
            return all
        }
        let elapsed = (ContinuousClock.now - start).seconds
        progress.cancel()
        await Console.shared.endProgress()

        var latency = LatencyHistogram()
        var transmitLatency = LatencyHistogram()
        var stats: [ClientStats] = []
        var problems: [String] = []
        for r in results {
            latency.merge(r.latency)
            transmitLatency.merge(r.transmitLatency)
            stats.append(r.stats)
            if let p = r.problem { problems.append(p) }
        }
        let report = BenchReport(
            connections: connections, batchSize: batchSize, compression: !connection.noCompression,
            mode: rate == nil ? "closed" : "open", rate: rate, seconds: elapsed,
            readings: stats.reduce(0) { $0 + $1.readingsAcked }, batches: stats.reduce(0) { $0 + $1.batchesAcked },
            unacked: stats.reduce(0) { $0 + $1.readingsOutstanding },
            rejected: stats.reduce(0) { $0 + $1.readingsRejected + $1.readingsInRejectedBatches },
            latency: latency, transmitLatency: transmitLatency, creditWaitSeconds: stats.reduce(0) { $0 + $1.creditWaitSeconds },
            creditWaits: stats.reduce(0) { $0 + $1.creditWaits },
            wireBytes: stats.reduce(0) { $0 + $1.batchWireBytes }, wireReadings: stats.reduce(0) { $0 + $1.batchWireReadings },
            reconnects: stats.reduce(0) { $0 + $1.reconnects })
        await Console.shared.output(json ? report.json : report.table)
        for p in problems { await Console.shared.note("bench: \(p)") }
        if report.unacked > 0 || report.rejected > 0 || !problems.isEmpty { throw ExitCode(1) }
    }
}

enum BenchLimit: Sendable {
    case seconds(Double)
    case readings(Int)
}

/// Counters every worker adds to, read by the progress line.
final class BenchTally: Sendable {
    let readings = Atomic<Int>(0)
    let batches = Atomic<Int>(0)
}

struct WorkerResult: Sendable {
    var latency: LatencyHistogram
    /// From each batch's first transmission to its ack: the server's share of `latency`, without the time a
    /// batch waited in the client (for credit, or behind earlier batches).
    var transmitLatency: LatencyHistogram
    var stats: ClientStats
    var problem: String?
}

/// One regular series: 1 s apart, values a random walk in steps of 0.01.
struct SeriesState: Sendable {
    let deviceID: String
    let metric: String
    var step = 0
    var scaled = Int64.random(in: 1_000...3_000)

    init(deviceID: String, metric: String) {
        self.deviceID = deviceID
        self.metric = metric
    }

    /// Timestamps start 6 days back and wrap after 5 days, so they stay inside the server's accepted window
    /// (7 days back, 5 minutes ahead) however long the run.
    static let span = 5 * 86_400
    static let origin = nowMicros() - 6 * 86_400 * 1_000_000

    mutating func chunk(_ n: Int, random: inout SplitMix64) -> SeriesChunk {
        var times = [Int64]()
        var values = [Double]()
        times.reserveCapacity(n)
        values.reserveCapacity(n)
        for _ in 0..<n {
            times.append(Self.origin + Int64(step % Self.span) * 1_000_000)
            scaled += Int64.random(in: -1...1, using: &random)
            values.append(Double(scaled) / 100)
            step += 1
        }
        return SeriesChunk(deviceID: deviceID, metric: metric, times: times, values: values)
    }
}

/// One connection's load loop. Closed loop: at most `window` readings outstanding (queued or unacked), so
/// a run ends promptly and latency measures the server, not a queue in the client. Open loop: batches go at
/// their scheduled times whatever the acks do.
struct BenchWorker: Sendable {
    let client: SluiceClient
    let tally: BenchTally
    let openLoop: Bool
    let window: Int
    /// Where in each interval this connection's batches fall (0..<1): connections are staggered so the total
    /// load arrives evenly spaced, not as a burst of one batch per connection at the same instant.
    let phase: Double
    var series: [SeriesState]

    func run(batchSize: Int, limit: BenchLimit, interval: Double?) async -> WorkerResult {
        // One consumer per stream: this loop in closed loop, `ackTask` in open loop.
        var events = openLoop ? nil : client.events.makeAsyncIterator()
        var latency = LatencyHistogram()
        var transmitLatency = LatencyHistogram()
        var outstanding = 0
        func handle(_ event: ClientEvent) {
            switch event {
            case .acked(let ack):
                latency.record(ack.latency ?? ack.sinceEnqueued)
                transmitLatency.record(ack.latency ?? ack.sinceEnqueued)
                tally.readings.add(ack.readings, ordering: .relaxed)
                tally.batches.add(1, ordering: .relaxed)
                outstanding -= ack.readings
            case .rejected(let rejection):
                outstanding -= rejection.readings
            default:
                break
            }
        }
        // Open loop: acks are taken by a task of their own, so sending keeps to its schedule.
        let ackTask: Task<(LatencyHistogram, LatencyHistogram), Never>? =
            openLoop
            ? Task { [client, tally] in
                var latency = LatencyHistogram()
                var transmitLatency = LatencyHistogram()
                for await event in client.events {
                    guard case .acked(let ack) = event else { continue }
                    latency.record(ack.sinceEnqueued)
                    transmitLatency.record(ack.latency ?? ack.sinceEnqueued)
                    tally.readings.add(ack.readings, ordering: .relaxed)
                    tally.batches.add(1, ordering: .relaxed)
                }
                return (latency, transmitLatency)
            } : nil
        var series = self.series
        // Not the system generator: a `getrandom` call per reading was 70% of the load generator's CPU.
        var random = SplitMix64()
        var cursor = 0
        var sent = 0
        var problem: String?
        let start = ContinuousClock.now
        var batchIndex = 0
        while true {
            if case .seconds(let s) = limit, (ContinuousClock.now - start).seconds >= s { break }
            if case .readings(let n) = limit, sent >= n { break }
            var size = batchSize
            if case .readings(let n) = limit { size = min(size, n - sent) }
            var scheduled: ContinuousClock.Instant?
            if let interval {
                let at = start + .nanoseconds(Int64((Double(batchIndex) + phase) * interval * 1e9))
                if at > .now { try? await Task.sleep(until: at, clock: .continuous) }
                scheduled = at
            } else {
                while outstanding + size > window, let event = await events?.next() { handle(event) }
            }
            batchIndex += 1
            // Spread the batch over as many series as it has readings for, rotating through them.
            let k = min(series.count, size)
            var chunks: [SeriesChunk] = []
            chunks.reserveCapacity(k)
            for j in 0..<k {
                let n = size / k + (j < size % k ? 1 : 0)
                chunks.append(series[(cursor + j) % series.count].chunk(n, random: &random))
            }
            cursor = (cursor + k) % series.count
            do {
                try await client.send(chunks, enqueuedAt: scheduled)
            } catch {
                problem = "\(error)"
                break
            }
            sent += size
            outstanding += size
        }
        do {
            try await client.close(timeout: .seconds(60))
        } catch {
            problem = problem ?? "\(error)"
        }
        if let ackTask {
            (latency, transmitLatency) = await ackTask.value
        } else {
            while let event = await events?.next() { handle(event) }
        }
        return WorkerResult(
            latency: latency, transmitLatency: transmitLatency, stats: await client.statistics, problem: problem)
    }
}

/// The final figures.
struct BenchReport {
    var connections: Int
    var batchSize: Int
    var compression: Bool
    var mode: String
    var rate: Double?
    var seconds: Double
    var readings: Int
    var batches: Int
    var unacked: Int
    var rejected: Int
    var latency: LatencyHistogram
    var transmitLatency: LatencyHistogram
    var creditWaitSeconds: Double
    var creditWaits: Int
    var wireBytes: Int
    var wireReadings: Int
    var reconnects: Int

    var readingsPerSecond: Double { Double(readings) / max(seconds, 1e-9) }
    var batchesPerSecond: Double { Double(batches) / max(seconds, 1e-9) }
    var wireBytesPerReading: Double { wireReadings == 0 ? 0 : Double(wireBytes) / Double(wireReadings) }

    var table: String {
        let rows: [(String, String)] = [
            ("mode", mode == "open" ? "open loop at \(Format.rate(rate ?? 0)) readings/s" : "closed loop"),
            ("connections", "\(connections)"),
            ("batch size", "\(batchSize) readings"),
            ("compression", compression ? "zstd" : "off"),
            ("duration", Format.duration(seconds)),
            ("readings acked", Format.count(readings)),
            ("readings/s", Format.rate(readingsPerSecond)),
            ("batches/s", Format.rate(batchesPerSecond)),
            ("ack latency p50", Format.millis(latency.percentile(0.5))),
            ("ack latency p99", Format.millis(latency.percentile(0.99))),
            ("ack latency p99.9", Format.millis(latency.percentile(0.999))),
            ("p50 / p99 from transmission", "\(Format.millis(transmitLatency.percentile(0.5))) / \(Format.millis(transmitLatency.percentile(0.99)))"),
            ("credit wait", "\(Format.duration(creditWaitSeconds)) over \(creditWaits) waits (all connections)"),
            ("wire bytes/reading", Format.fixed(wireBytesPerReading, 3)),
            ("rejected", Format.count(rejected)),
            ("unacked", Format.count(unacked)),
            ("reconnects", "\(reconnects)"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    var json: String {
        func n(_ x: Double) -> String { x.isFinite ? String(format: "%.6g", x) : "null" }
        return """
            {"mode": "\(mode)", "rate": \(rate.map(n) ?? "null"), "connections": \(connections), \
            "batch_size": \(batchSize), "compression": \(compression), "duration_seconds": \(n(seconds)), \
            "readings": \(readings), "batches": \(batches), "readings_per_second": \(n(readingsPerSecond)), \
            "batches_per_second": \(n(batchesPerSecond)), "latency_p50_ms": \(n(latency.percentile(0.5) * 1000)), \
            "latency_p99_ms": \(n(latency.percentile(0.99) * 1000)), "latency_p999_ms": \(n(latency.percentile(0.999) * 1000)), \
            "transmit_latency_p50_ms": \(n(transmitLatency.percentile(0.5) * 1000)), \
            "transmit_latency_p99_ms": \(n(transmitLatency.percentile(0.99) * 1000)), \
            "credit_wait_seconds": \(n(creditWaitSeconds)), "credit_waits": \(creditWaits), \
            "wire_bytes_per_reading": \(n(wireBytesPerReading)), "rejected": \(rejected), "unacked": \(unacked), \
            "reconnects": \(reconnects)}
            """
    }
}
