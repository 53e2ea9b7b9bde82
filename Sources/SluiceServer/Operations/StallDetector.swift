import Logging
import Metrics
import NIOCore

/// Finds the classic failure of an async server: one accidental blocking call that freezes an event loop or
/// the cooperative pool while everything looks idle.
///
/// Every `interval` each event loop runs a probe of its own and the cooperative pool a short sleep, and it
/// records how late each one ran. Lateness goes to the histograms `sluice_event_loop_lag_seconds` (by loop)
/// and `sluice_cooperative_pool_lag_seconds`; anything past `warnAfter` is logged as a warning naming the loop
/// and the length of the stall.
public struct StallDetector: Sendable {
    public var interval: Duration
    public var warnAfter: Duration
    private let loops: [any EventLoop]
    private let logger: Logger
    private let factory: any MetricsFactory

    /// - Parameter factory: where the lag histograms go; `sluiced` passes its Prometheus registry's factory.
    public init(
        loops: [any EventLoop], interval: Duration = .milliseconds(100), warnAfter: Duration = .milliseconds(50),
        logger: Logger, factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.loops = loops
        self.interval = interval
        self.warnAfter = warnAfter
        self.logger = logger
        self.factory = factory
    }

    /// Runs until cancelled.
    public func run() async {
        let probes = loops.enumerated().map { index, loop in watch(loop: loop, name: "event-loop-\(index)") }
        await watchCooperativePool()
        for probe in probes { probe.cancel() }
    }

    /// Each loop times itself: a task it runs every `interval` measures how late it fired. Scheduling the probe
    /// from a task on the cooperative pool instead would miss a blocked loop whenever the pool is busy too (a
    /// loaded machine, or the very accident this looks for): the probe would go out only after the block.
    private func watch(loop: any EventLoop, name: String) -> RepeatedTask {
        let timer = Metrics.Timer(label: "sluice_event_loop_lag_seconds", dimensions: [("loop", name)], factory: factory)
        let interval = TimeAmount.nanoseconds(Int64(interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000))
        let lastRun = NIOLoopBoundBox.makeBoxSendingValue(NIODeadline.now(), eventLoop: loop)
        return loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            // The next run is scheduled `interval` after this one ends: lateness beyond it is time the loop
            // spent on something else.
            let now = NIODeadline.now()
            let late = now - lastRun.value - interval
            lastRun.value = now
            record(lag: .nanoseconds(max(0, late.nanoseconds)), timer: timer, where: name)
        }
    }

    private func watchCooperativePool() async {
        let timer = Metrics.Timer(label: "sluice_cooperative_pool_lag_seconds", factory: factory)
        let clock = ContinuousClock()
        while !Task.isCancelled {
            let start = clock.now
            do { try await Task.sleep(for: interval) } catch { return }
            // Oversleeping means no cooperative thread was free to resume us.
            let lag = clock.now - start - interval
            record(lag: max(lag, .zero), timer: timer, where: "cooperative-pool")
        }
    }

    private func record(lag: Duration, timer: Metrics.Timer, where name: String) {
        let nanos = lag.components.seconds * 1_000_000_000 + lag.components.attoseconds / 1_000_000_000
        timer.recordNanoseconds(nanos)
        if lag > warnAfter {
            logger.warning(
                "stall detected: \(name) was blocked for \(nanos / 1_000_000) ms",
                metadata: ["loop": "\(name)", "stall_ms": "\(nanos / 1_000_000)"])
        }
    }
}
