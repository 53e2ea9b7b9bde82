import NIOConcurrencyHelpers
import Prometheus
import SluiceStore

/// The server's counters: exported in Prometheus text on `/metrics` and summarised on `/status`.
///
/// Prometheus instruments live in the registry (shared with anything `sluiced` bootstraps through
/// swift-metrics); the plain totals `/status` needs are kept alongside under one lock.
final class ServerMetrics: Sendable {
    struct Totals: Sendable {
        var connections = 0
        var batchesAccepted = 0
        var batchesDuplicate = 0
        var batchesRejected = 0
        var readingsAccepted = 0
        var readingsRejected = 0
        var creditGranted = 0
        var protocolErrors = 0
        /// Last pool counters seen, to turn them into counter increments.
        var lastWriterErrors = 0
        var lastReconnects = 0
    }

    let registry: PrometheusCollectorRegistry
    private let totals = NIOLockedValueBox(Totals())

    private let connectionsGauge: Gauge
    private let batchesAccepted: Counter
    private let batchesDuplicate: Counter
    private let batchesRejected: Counter
    private let batchesFailed: Counter
    private let readingsAccepted: Counter
    private let readingsRejected: Counter
    private let creditGranted: Counter
    private let creditRecalled: Counter
    private let creditReturned: Counter
    private let creditHeld: Gauge
    private let readingsInFlight: Gauge
    private let queueDepth: Gauge
    private let commitLatencyP99: Gauge
    private let ackLatency: DurationHistogram
    private let writerErrors: Counter
    private let reconnects: Counter
    private let databaseUp: Gauge
    private let writerStalled: Gauge
    private let creditWithheld: Gauge
    private let creditWaiting: Gauge
    private let errorsSent: Counter

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        func describe(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        connectionsGauge = registry.makeGauge(descriptor: describe("sluice_connections", "Open ingest connections"))
        batchesAccepted = registry.makeCounter(descriptor: describe("sluice_batches_total", "Batches by outcome"), labels: [("outcome", "accepted")])
        batchesDuplicate = registry.makeCounter(descriptor: describe("sluice_batches_total", "Batches by outcome"), labels: [("outcome", "duplicate")])
        batchesRejected = registry.makeCounter(descriptor: describe("sluice_batches_total", "Batches by outcome"), labels: [("outcome", "rejected")])
        batchesFailed = registry.makeCounter(descriptor: describe("sluice_batches_total", "Batches by outcome"), labels: [("outcome", "failed")])
        readingsAccepted = registry.makeCounter(descriptor: describe("sluice_readings_total", "Readings by outcome"), labels: [("outcome", "accepted")])
        readingsRejected = registry.makeCounter(descriptor: describe("sluice_readings_total", "Readings by outcome"), labels: [("outcome", "rejected")])
        creditGranted = registry.makeCounter(descriptor: describe("sluice_credit_granted_readings_total", "Credit granted to clients, in readings"))
        creditRecalled = registry.makeCounter(
            descriptor: describe("sluice_credit_recalled_readings_total", "Idle credit recalled from clients for connections waiting in the request line, in readings"))
        creditReturned = registry.makeCounter(
            descriptor: describe("sluice_credit_returned_readings_total", "Credit clients gave back (CreditReturn), in readings"))
        creditHeld = registry.makeGauge(descriptor: describe("sluice_credit_held_readings", "Credit clients hold now"))
        readingsInFlight = registry.makeGauge(descriptor: describe("sluice_readings_in_flight", "Credit held plus readings received and not yet committed"))
        queueDepth = registry.makeGauge(descriptor: describe("sluice_queue_depth_readings", "Readings queued for the writers"))
        commitLatencyP99 = registry.makeGauge(descriptor: describe("sluice_commit_latency_p99_seconds", "Writer transaction latency, 99th percentile, recent"))
        ackLatency = registry.makeDurationHistogram(
            descriptor: describe("sluice_commit_latency_seconds", "Time from a batch's submission to the writers until its commit"),
            buckets: [
                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                .seconds(1), .seconds(5),
            ])
        writerErrors = registry.makeCounter(descriptor: describe("sluice_writer_errors_total", "Failed writer transactions and connection attempts"))
        reconnects = registry.makeCounter(descriptor: describe("sluice_writer_reconnects_total", "Writer reconnections"))
        databaseUp = registry.makeGauge(descriptor: describe("sluice_database_up", "1 while PostgreSQL is reachable"))
        writerStalled = registry.makeGauge(
            descriptor: describe(
                "sluice_writer_stalled_seconds",
                "How long a writer has been retrying a group PostgreSQL refuses for reasons not about the data (0: none); /status says why"))
        creditWaiting = registry.makeGauge(descriptor: describe("sluice_credit_waiting_connections", "Connections left short of their share, waiting for budget"))
        creditWithheld = registry.makeGauge(descriptor: describe("sluice_credit_withheld", "1 while credit is withheld (queue or latency above target)"))
        errorsSent = registry.makeCounter(descriptor: describe("sluice_errors_sent_total", "Error frames sent to clients"))
    }

    func connectionOpened() {
        connectionsGauge.increment()
        totals.withLockedValue { $0.connections += 1 }
    }

    func connectionClosed() {
        connectionsGauge.decrement()
        totals.withLockedValue { $0.connections -= 1 }
    }

    func batchFinished(_ outcome: BatchOutcome, accepted: Int, rejected: Int, latency: Duration) {
        switch outcome {
        case .committed:
            batchesAccepted.increment()
            readingsAccepted.increment(by: Int64(accepted))
            readingsRejected.increment(by: Int64(rejected))
            ackLatency.record(latency)
            totals.withLockedValue {
                $0.batchesAccepted += 1
                $0.readingsAccepted += accepted
                $0.readingsRejected += rejected
            }
        case .duplicate:
            batchesDuplicate.increment()
            totals.withLockedValue { $0.batchesDuplicate += 1 }
        case .failed:
            batchesFailed.increment()
            totals.withLockedValue { $0.batchesRejected += 1 }
        }
    }

    func batchRejected() {
        batchesRejected.increment()
        totals.withLockedValue { $0.batchesRejected += 1 }
    }

    /// Counts an `Error` frame, also by status code (`sluice_errors_sent_by_code_total{code="PROTOCOL_ERROR"}`),
    /// so a dashboard tells a wave of bad frames from a wave of bad tokens.
    func errorSent(code: String) {
        errorsSent.increment()
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                metricName: "sluice_errors_sent_by_code_total", unitName: "", helpText: "Error frames sent, by status code"),
            labels: [("code", code)]
        ).increment()
    }

    func granted(_ readings: Int) {
        creditGranted.increment(by: Int64(readings))
    }

    func recalled(_ readings: Int) {
        creditRecalled.increment(by: Int64(readings))
    }

    func returned(_ readings: Int) {
        creditReturned.increment(by: Int64(readings))
    }

    /// Called by the coordinator's periodic look at the pool and the flow controller.
    func observe(stats: WriterPoolStats, creditHeld held: Int, inFlight: Int, withheld: Bool, waiting: Int) {
        creditHeld.set(Double(held))
        creditWaiting.set(Double(waiting))
        readingsInFlight.set(Double(inFlight))
        queueDepth.set(Double(stats.queuedReadings))
        commitLatencyP99.set(stats.commitLatencyP99Seconds)
        databaseUp.set(stats.databaseReachable ? 1.0 : 0.0)
        writerStalled.set(stats.stall?.seconds ?? 0)
        creditWithheld.set(withheld ? 1.0 : 0.0)
        let (errors, reconnectCount) = totals.withLockedValue { t -> (Int, Int) in
            defer {
                t.lastWriterErrors = stats.writerErrors
                t.lastReconnects = stats.reconnects
            }
            return (stats.writerErrors - t.lastWriterErrors, stats.reconnects - t.lastReconnects)
        }
        if errors > 0 { writerErrors.increment(by: Int64(errors)) }
        if reconnectCount > 0 { reconnects.increment(by: Int64(reconnectCount)) }
    }

    var snapshot: Totals { totals.withLockedValue { $0 } }

    /// The Prometheus text exposition.
    func prometheusText() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
