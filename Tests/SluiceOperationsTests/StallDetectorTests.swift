import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import Testing

@testable import SluiceServer

#if canImport(Glibc)
    import Glibc
#endif

/// Collects log messages so a test can look for the stall warning.
final class CapturingLogHandler: LogHandler, Sendable {
    let lines = NIOLockedValueBox<[String]>([])
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }
    func log(event: LogEvent) {
        lines.withLockedValue { $0.append("\(event.level) \(event.message)") }
    }
}

@Suite struct StallDetectorTests {
    @Test func aBlockingCallOnAnEventLoopIsReportedAsAStallInTheLogAndTheMetrics() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let capture = CapturingLogHandler()
        let logger = Logger(label: "stall-test", factory: { _ in capture })
        let registry = PrometheusCollectorRegistry()
        let loops = Array(group.makeIterator())
        let detector = StallDetector(
            loops: loops, interval: .milliseconds(50), warnAfter: .milliseconds(100), logger: logger,
            factory: PrometheusMetricsFactory(registry: registry))
        let watching = Task { await detector.run() }

        // The accident the detector exists for: a blocking call on an event loop. On a loaded machine the
        // detector's own probe may be scheduled late, so block again until it has been seen (a few tries).
        var warnings: [String] = []
        for _ in 0..<5 where warnings.isEmpty {
            loops[1].execute { usleep(600_000) }
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline {
                warnings = capture.lines.withLockedValue { $0 }.filter { $0.contains("event-loop-1 was blocked for") }
                if !warnings.isEmpty { break }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        watching.cancel()
        await watching.value
        try await group.shutdownGracefully()

        #expect(!warnings.isEmpty, "\(capture.lines.withLockedValue { $0 })")
        var text = [UInt8]()
        registry.emit(into: &text)
        let metrics = String(decoding: text, as: UTF8.self)
        let lagLines = metrics.split(separator: "\n").filter {
            $0.hasPrefix("sluice_event_loop_lag_seconds_count") && $0.contains("event-loop-1")
        }
        #expect(!lagLines.isEmpty, "lag histogram exported:\n\(metrics)")
        #expect(metrics.contains("sluice_cooperative_pool_lag_seconds"))
    }
}
