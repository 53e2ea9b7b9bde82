import NIOConcurrencyHelpers
import Prometheus
import SluiceCore
import SluiceProtocol
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
        var lastWriterErrorsByClass: [String: Int] = [:]
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
    private let serverAckLatency: DurationHistogram
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
        serverAckLatency = registry.makeDurationHistogram(
            descriptor: describe(
                "sluice_ack_latency_seconds",
                "Time from a batch frame's arrival until its ack is written: decode, validation, queueing, COPY and commit"),
            buckets: [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                .seconds(2), .seconds(5), .seconds(10),
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
        // The series a dashboard and alert rules name exist from the start, at 0, not only after a first error.
        for label in ["connection", "08", "25", "40", "42", "53", "55", "57", "XX"] {
            _ = registry.makeCounter(descriptor: Self.writerErrorsByClass, labels: [("class", label)])
        }
        for code in StatusCode.allCases where code != .ok {
            _ = registry.makeCounter(descriptor: Self.errorsSentByCode, labels: [("code", code.name)])
        }
    }

    private static var errorsSentByCode: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "sluice_errors_sent_by_code_total", unitName: "", helpText: "Error frames sent, by status code")
    }

    private static var writerErrorsByClass: MetricNameDescriptor {
        MetricNameDescriptor(
        metricName: "sluice_writer_errors_by_class_total", unitName: "",
            helpText: "Writer errors by SQLSTATE class (08 connection, 25 read-only, 53 resources, 57 shutdown...; connection: no SQLSTATE)")
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

    /// An ack left for the client `latency` after its batch frame arrived.
    func ackSent(latency: Duration) {
        serverAckLatency.record(latency)
    }

    /// Gauges of what the daemon is and how it is configured, set once at start: which build runs, the credit
    /// budget and the queue's watermarks and capacity (the lines dashboards draw the live values against).
    func describe(version: String, flow: FlowController.Configuration, queueCapacityReadings: Int) {
        func gauge(_ name: String, _ help: String, labels: [(String, String)] = []) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        }
        gauge("sluice_build_info", "The running build (value 1), by version", labels: [("version", version)]).set(1.0)
        gauge("sluice_credit_budget_readings", "Credit the flow controller may have out at once, in readings").set(Double(flow.budget))
        gauge("sluice_queue_high_watermark_readings", "Queue depth above which credit is withheld").set(Double(flow.queueHighWater))
        gauge("sluice_queue_low_watermark_readings", "Queue depth below which credit flows again").set(Double(flow.queueLowWater))
        gauge("sluice_queue_capacity_readings", "The writer queue's bound, in readings").set(Double(queueCapacityReadings))
        gauge("sluice_commit_latency_target_seconds", "Commit p99 above which credit is withheld").set(flow.latencyTarget)
    }

    func batchRejected() {
        batchesRejected.increment()
        totals.withLockedValue { $0.batchesRejected += 1 }
    }

    /// Counts an `Error` frame, also by status code (`sluice_errors_sent_by_code_total{code="PROTOCOL_ERROR"}`),
    /// so a dashboard tells a wave of bad frames from a wave of bad tokens.
    func errorSent(code: String) {
        errorsSent.increment()
        registry.makeCounter(descriptor: Self.errorsSentByCode, labels: [("code", code)]).increment()
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
        let byClass = totals.withLockedValue { t -> [(String, Int)] in
            defer { t.lastWriterErrorsByClass = stats.writerErrorsByClass }
            return stats.writerErrorsByClass.compactMap { label, count in
                let added = count - (t.lastWriterErrorsByClass[label] ?? 0)
                return added > 0 ? (label, added) : nil
            }
        }
        for (label, added) in byClass {
            registry.makeCounter(descriptor: Self.writerErrorsByClass, labels: [("class", label)]).increment(by: Int64(added))
        }
        if reconnectCount > 0 { reconnects.increment(by: Int64(reconnectCount)) }
    }

    var snapshot: Totals { totals.withLockedValue { $0 } }

    /// The Prometheus text exposition.
    func prometheusText() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        buffer += ProcessMetrics.read().prometheusText.utf8
        return buffer
    }
}
