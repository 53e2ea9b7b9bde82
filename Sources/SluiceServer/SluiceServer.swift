import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import ServiceLifecycle
import SluiceCore
import SluiceProtocol
import SluiceStore

/// The sluice ingest server: TCP listener, sessions, pipeline, writer pool, and the HTTP status endpoint.
///
/// ```swift
/// let server = SluiceServer(configuration: .init(port: 0, writerPool: .init(databaseURL: url)), logger: logger)
/// try await server.start()
/// print(server.localPort)
/// await server.shutdown()   // drain: GoAway, commit what is queued, last acks
/// ```
///
/// As a swift-service-lifecycle `Service`, `run()` starts it, waits for graceful shutdown (SIGTERM in
/// `sluiced`), and drains.
public final class SluiceServer: Service, Sendable {
    private struct Running: Sendable {
        var group: MultiThreadedEventLoopGroup
        var listener: any Channel
        /// The context new ingest connections get; `reloadTLS()` swaps it. nil = plain TCP.
        var tls: NIOLockedValueBox<NIOSSLContext>?
        var http: (any Channel)?
        var pool: WriterPool
        var coordinator: IngestCoordinator
        var pipeline: IngestPipeline
        var pipelineTask: Task<Void, Never>
        var metrics: ServerMetrics
        var background: [Task<Void, Never>]
        var localPort: Int
        var httpPort: Int?
    }

    private enum Phase: Sendable {
        case idle
        case running(Running)
        case stopped
    }

    public let configuration: Configuration
    /// Where the server's Prometheus instruments live; `/metrics` emits all of it.
    public let metricsRegistry: PrometheusCollectorRegistry
    private let logger: Logger
    private let phase = NIOLockedValueBox(Phase.idle)
    private let startedAt = ContinuousClock.now

    public init(
        configuration: Configuration, logger: Logger,
        metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) {
        self.configuration = configuration
        self.logger = logger
        self.metricsRegistry = metricsRegistry
    }

    /// The port the ingest listener is bound to (useful with port 0). 0 before `start()`.
    public var localPort: Int {
        phase.withLockedValue { if case .running(let r) = $0 { r.localPort } else { 0 } }
    }

    /// The port of the HTTP listener, if there is one.
    public var httpPort: Int? {
        phase.withLockedValue { if case .running(let r) = $0 { r.httpPort } else { nil } }
    }

    /// Connects to PostgreSQL (migrating the schema), loads the device registry, and starts listening.
    /// Throws a clear error if the database is unreachable or an address cannot be bound.
    public func start() async throws {
        // A bad certificate or key fails start-up before anything else starts (file I/O: off the cooperative pool).
        var tls: ServerTLS.Loaded?
        if let setting = configuration.tls {
            tls = try await NIOThreadPool.singleton.runIfActive { try ServerTLS.load(setting) }
        }
        let pool = WriterPool(configuration: configuration.writerPool, logger: logger)
        try await pool.start()

        let reader = DeviceRegistryReader(databaseURL: configuration.writerPool.databaseURL, logger: logger)
        let registry = DeviceRegistryCache(reader: reader, deadline: configuration.enrichmentDeadline, logger: logger)
        await registry.reload()

        let metrics = ServerMetrics(registry: metricsRegistry)
        metrics.describe(
            version: SluiceServer.version, flow: configuration.flow,
            queueCapacityReadings: configuration.writerPool.queueCapacityReadings)
        let coordinator = IngestCoordinator(
            flow: configuration.flow, tokens: configuration.tokens, maxConnections: configuration.maxConnections,
            metrics: metrics, logger: logger, maxUnauthenticated: configuration.maxUnauthenticatedConnections,
            maxUnauthenticatedPerAddress: configuration.maxUnauthenticatedPerAddress)
        let pipeline = IngestPipeline(
            concurrency: configuration.pipelineConcurrency, policy: configuration.validation, registry: registry)
        let pipelineTask = Task { await pipeline.run() }
        let refreshInterval = configuration.registryRefreshInterval
        var background = [Task { await registry.refreshForever(every: refreshInterval) }]
        background.append(
            Task {
                // The flow controller's view of the database: queue depth and commit latency, 20 times a second.
                while !Task.isCancelled {
                    coordinator.observe(pool.stats)
                    try? await Task.sleep(nanoseconds: 50_000_000)
                }
            })

        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads)
        let context = ServerContext(
            coordinator: coordinator, pipeline: pipeline, pool: pool, configuration: configuration, logger: logger,
            owners: ProducerOwners(databaseURL: configuration.writerPool.databaseURL))
        let listener: any Channel
        var http: (any Channel)?
        let tlsContext = tls.map { NIOLockedValueBox($0.context) }
        do {
            listener = try await Self.bindIngest(group: group, context: context, tls: tlsContext)
            if let httpHost = configuration.httpHost {
                let listen = "\(configuration.host):\(listener.localAddress?.port ?? 0)"
                http = try await bindHTTP(
                    group: group, host: httpHost, port: configuration.httpPort, listen: listen,
                    coordinator: coordinator, pool: pool, metrics: metrics)
            }
        } catch {
            pipeline.finish()
            await pipelineTask.value
            for task in background { task.cancel() }
            await pool.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        // Blocking calls that slip onto an event loop or the cooperative pool show up as lag on /metrics and
        // as a warning in the log.
        let detector = StallDetector(
            loops: Array(group.makeIterator()), logger: logger, factory: PrometheusMetricsFactory(registry: metricsRegistry))
        background.append(Task { await detector.run() })  // last: shutdown waits for it (see `shutdown`)
        let running = Running(
            group: group, listener: listener, tls: tlsContext, http: http, pool: pool, coordinator: coordinator, pipeline: pipeline,
            pipelineTask: pipelineTask, metrics: metrics, background: background, localPort: listener.localAddress?.port ?? 0,
            httpPort: http?.localAddress?.port)
        phase.withLockedValue { $0 = .running(running) }

        if configuration.tokens.entries.isEmpty {
            logger.notice("no tokens configured: accepting loopback clients only (create one with `sluiced token create`)")
        } else {
            logger.info("token authentication on", metadata: ["tokens": "\(configuration.tokens.entries.count)"])
        }
        if let tls { tls.warnIfExpired(logger: logger) }
        logger.info(
            "ingest listener ready",
            metadata: [
                "listen": "\(configuration.host):\(running.localPort)", "tls": "\(tls == nil ? "off" : "on")",
                "http": "\(running.httpPort.map { "\(configuration.httpHost ?? ""):\($0)" } ?? "off")",
                "writers": "\(configuration.writerPool.writers)", "pipeline": "\(configuration.pipelineConcurrency)",
            ])
    }

    /// What systemd's watchdog and `STATUS=` line need to know.
    public struct Liveness: Sendable {
        /// Every event loop ran a task within the timeout and the ingest pipeline is still running.
        public var responsive: Bool
        public var connections: Int
        public var readingsAccepted: Int
        public var databaseReachable: Bool
    }

    /// Proves the server is alive rather than merely not dead: each event loop must run a task within
    /// `timeout` (a blocked loop fails this), and the pipeline task must still be running. nil when not running.
    public func liveness(timeout: Duration) async -> Liveness? {
        guard let running = phase.withLockedValue({ p -> Running? in if case .running(let r) = p { r } else { nil } })
        else { return nil }
        let loops = Array(running.group.makeIterator())
        let answered = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for loop in loops { _ = try? await loop.submit {}.get() }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        let totals = running.metrics.snapshot
        return Liveness(
            responsive: answered && !running.pipelineTask.isCancelled, connections: totals.connections,
            readingsAccepted: totals.readingsAccepted, databaseReachable: running.pool.stats.databaseReachable)
    }

    /// Replaces the token table (SIGHUP in `sluiced`). Sessions whose token is still there keep their scope;
    /// sessions whose token is gone are closed with `UNAUTHENTICATED` at once.
    public func reloadTokens(_ tokens: TokenTable) {
        let coordinator = phase.withLockedValue { p -> IngestCoordinator? in
            if case .running(let r) = p { r.coordinator } else { nil }
        }
        let revoked = coordinator?.replaceTokens(tokens) ?? 0
        logger.info("tokens reloaded", metadata: ["tokens": "\(tokens.entries.count)", "sessions_closed": "\(revoked)"])
    }

    /// Re-reads the TLS certificate chain and key from the paths given at start (SIGHUP in `sluiced`), so a
    /// renewed certificate needs no restart. Connections accepted afterwards get the new one; open connections
    /// keep theirs. If the files are unusable, the current certificate stays in use and the error (a
    /// `TLSSetupError` naming the file and the reason, as at start-up) is logged and thrown.
    ///
    /// - Returns: when the new certificate expires; nil when TLS is off or the server is not running.
    @discardableResult
    public func reloadTLS() async throws -> Date? {
        guard let setting = configuration.tls,
            let box = phase.withLockedValue({ p -> NIOLockedValueBox<NIOSSLContext>? in
                if case .running(let r) = p { r.tls } else { nil }
            })
        else { return nil }
        let loaded: ServerTLS.Loaded
        do {
            // File I/O and BoringSSL set-up block: NIO's thread pool, not an event loop or the cooperative pool.
            loaded = try await NIOThreadPool.singleton.runIfActive { try ServerTLS.load(setting) }
        } catch {
            logger.error("TLS reload failed; keeping the current certificate", metadata: ["error": "\(error)"])
            throw error
        }
        box.withLockedValue { $0 = loaded.context }
        logger.notice(
            "TLS certificate reloaded",
            metadata: ["certificate": "\(loaded.certificatePath)", "not_valid_after": "\(loaded.notValidAfter)"])
        loaded.warnIfExpired(logger: logger)
        return loaded.notValidAfter
    }

    /// What a drain left behind: nothing, unless the deadline passed first.
    public struct DrainReport: Sendable, Equatable {
        /// Connections still owed acks at the deadline, closed anyway.
        public var forcedCloses: Int = 0
        /// False when the writers had not committed everything queued by the deadline.
        public var writersDrained: Bool = true
        /// Readings admitted but not committed (so not acknowledged) when the drain gave up; their clients
        /// resend them after reconnecting (deduplicated by producer and seq, so nothing is written twice).
        public var unacknowledgedReadings: Int = 0
        public var complete: Bool { forcedCloses == 0 && writersDrained && unacknowledgedReadings == 0 }
    }

    /// Drains and stops: stop accepting, send `GoAway`, stop granting credit, commit what is queued, send the
    /// last acks, close. One deadline, `drainTimeout` from the call, covers all of it: connections still owed
    /// acks then are closed anyway, and writers still waiting on the database (a lock, a stall) are left behind
    /// — the report says how many readings went unacknowledged, which their clients resend after reconnecting
    /// (nothing is lost or written twice). A process exiting right after does not wait for those writers.
    @discardableResult
    public func shutdown() async -> DrainReport {
        let running: Running? = phase.withLockedValue { p in
            guard case .running(let r) = p else { return nil }
            p = .stopped
            return r
        }
        guard let running else { return DrainReport() }
        let clock = ContinuousClock()
        let began = clock.now
        try? await running.listener.close()
        let open = running.coordinator.beginDrain()
        logger.notice("draining", metadata: ["connections": "\(open)"])
        let deadline = began + .milliseconds(Int64(configuration.drainTimeout * 1000))
        while running.coordinator.openConnections > 0 && clock.now < deadline {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        let stragglers = running.coordinator.handles
        for handle in stragglers { handle.forceClose() }
        // The pipeline and the writers get what is left of the same deadline, not one of their own.
        let writers = Task {
            running.pipeline.finish()
            await running.pipelineTask.value
            await running.pool.shutdown()
        }
        let drained = await Self.finishes(writers, before: deadline)
        var report = DrainReport(forcedCloses: stragglers.count, writersDrained: drained)
        if !drained { report.unacknowledgedReadings = running.pool.stats.inFlightReadings }
        for task in running.background { task.cancel() }
        // The stall detector (the last background task) runs a probe on every event loop: it must have stopped
        // them before the loops shut down, or NIO complains of tasks scheduled on a loop that is gone.
        await running.background.last?.value
        try? await running.http?.close()
        try? await running.group.shutdownGracefully()
        if report.writersDrained {
            logger.notice(
                "stopped", metadata: ["drain_seconds": "\(clock.now - began)", "forced_closes": "\(stragglers.count)"])
        } else {
            logger.error(
                "drain deadline passed with readings unacknowledged: the database did not commit them in time; their clients resend them after reconnecting",
                metadata: [
                    "drain_seconds": "\(clock.now - began)", "forced_closes": "\(stragglers.count)",
                    "unacknowledged_readings": "\(report.unacknowledgedReadings)",
                ])
        }
        return report
    }

    /// True if `task` finishes before `deadline`; false (leaving it running) otherwise.
    private static func finishes(_ task: Task<Void, Never>, before deadline: ContinuousClock.Instant) async -> Bool {
        let resumed = NIOLockedValueBox(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            @Sendable func resume(_ value: Bool) {
                let first = resumed.withLockedValue { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: value) }
            }
            let timer = Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                resume(false)
            }
            Task {
                await task.value
                resume(true)
                timer.cancel()
            }
        }
    }

    /// `Service`: starts, runs until graceful shutdown is triggered, then drains.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }

    // MARK: - Listeners

    private static func bindIngest(
        group: MultiThreadedEventLoopGroup, context: ServerContext, tls: NIOLockedValueBox<NIOSSLContext>?
    ) async throws -> any Channel {
        let configuration = context.configuration
        return try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let limits = FrameLimitsHandle(.handshake)
                    let progress = ReadProgress()
                    let peer = channel.remoteAddress
                    let peerText = peer.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                    let session = SessionHandler(
                        server: context, limits: limits, progress: progress, isLoopbackPeer: Self.isLoopback(peer),
                        peer: peerText)
                    // With TLS, its handlers come first: everything after them sees plaintext. The context is
                    // read per connection, so one swapped in by `reloadTLS()` serves the next accept.
                    let tlsHandlers =
                        tls.map {
                            ServerTLS.channelHandlers($0.withLockedValue { $0 }, logger: context.logger, peer: peerText)
                        } ?? []
                    let handlers: [any ChannelHandler] = tlsHandlers + [
                        ReadProgressHandler(progress: progress),
                        ByteToMessageHandler(FrameDecoder(expectsPreface: true, limits: limits)),
                        MessageToByteHandler(MessageFrameEncoder<ServerFrame>(compress: false)),
                        session,
                    ]
                    try channel.pipeline.syncOperations.addHandlers(handlers)
                }
            }
            .bind(host: configuration.host, port: configuration.port).get()
    }

    private func bindHTTP(
        group: MultiThreadedEventLoopGroup, host: String, port: Int, listen: String, coordinator: IngestCoordinator,
        pool: WriterPool, metrics: ServerMetrics
    ) async throws -> any Channel {
        let startedAt = self.startedAt
        let status: @Sendable () -> String = {
            let totals = metrics.snapshot
            let stats = pool.stats
            return StatusReport(
                uptimeSeconds: Double((ContinuousClock.now - startedAt).components.seconds)
                    + Double((ContinuousClock.now - startedAt).components.attoseconds) / 1e18,
                listen: listen, connections: totals.connections, batchesAccepted: totals.batchesAccepted,
                batchesDuplicate: totals.batchesDuplicate, batchesRejected: totals.batchesRejected,
                readingsAccepted: totals.readingsAccepted, readingsRejected: totals.readingsRejected,
                queueDepthReadings: stats.queuedReadings, creditHeldReadings: coordinator.creditHeld,
                commitLatencyP99Ms: stats.commitLatencyP99Seconds * 1000, databaseReachable: stats.databaseReachable,
                writerStall: stats.stall
            ).json
        }
        let prometheus: @Sendable () -> [UInt8] = {
            // Gauges only: a scrape must not feed the flow controller (that would grant credit on demand).
            coordinator.refreshGauges(pool.stats)
            return metrics.prometheusText()
        }
        let open = HTTPConnectionLimiter.Count(limit: max(1, configuration.maxHTTPConnections))
        let idle = TimeAmount.milliseconds(Int64(max(0.05, configuration.httpIdleTimeout) * 1000))
        return try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(allTimeout: idle), HTTPConnectionLimiter(count: open),
                    ])
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPEndpointHandler(status: status, metrics: prometheus))
                }
            }
            .bind(host: host, port: port).get()
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let ip = address?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }
}
