import NIOCore
import SluiceCore
import SluiceProtocol
import SluiceStore

extension SluiceServer {
    /// Everything the server needs to run; `sluiced` fills it from flags, environment and its config file.
    public struct Configuration: Sendable {
        /// Address the ingest listener binds; port 0 picks a free one (see `SluiceServer.localPort`).
        public var host: String
        public var port: Int
        /// Address of the HTTP listener for `/status` and `/metrics`; nil = none.
        public var httpHost: String?
        public var httpPort: Int
        /// The writer pool (database URL, writers, queue capacity).
        public var writerPool: WriterPool.Configuration
        /// Credit: global budget, per-connection window, high/low-water marks, latency target.
        public var flow: FlowController.Configuration
        /// Per-reading rules (DESIGN §3).
        public var validation: ValidationPolicy
        /// Handshake, heartbeat and stalled-frame deadlines.
        public var timeouts: SessionStateMachine.Timeouts
        /// Limits `Welcome` negotiates for frames after the handshake.
        public var frameLimits: FrameLimits
        /// Batches decoded, validated and enriched at once (the bounded task group's width, K).
        public var pipelineConcurrency: Int
        /// Frames one connection may have waiting in the pipeline before the server stops reading from it.
        public var maxFramesInPipelinePerConnection: Int
        /// Connections accepted at once; the next one gets `UNAVAILABLE` and is closed.
        public var maxConnections: Int
        /// Tokens allowed to connect; empty = loopback clients only, anonymously.
        public var tokens: TokenTable
        /// How often the device registry cache is reloaded, seconds.
        public var registryRefreshInterval: Double
        /// Deadline for looking up devices missing from the registry cache, seconds.
        public var enrichmentDeadline: Double
        /// How long a drain waits for sessions to receive their last acks before closing them, seconds.
        public var drainTimeout: Double
        /// NIO event loop threads.
        public var eventLoopThreads: Int
        /// TLS on the ingest listener; nil = plain TCP (the default).
        public var tls: TLS?
        /// Encoded bytes one connection may have waiting for the pipeline to decode them; past it the server
        /// stops reading that socket (TCP backpressure) until the pipeline catches up.
        public var maxPendingDecodeBytesPerConnection: Int = 8 << 20
        /// The same, summed over every connection: memory for undecoded frames stays bounded whatever the
        /// connection count.
        public var maxPendingDecodeBytes: Int = 64 << 20
        /// Connections not yet authenticated (preface and `Hello` pending, or being checked) at once; the
        /// next one gets `UNAVAILABLE`. Separate from `maxConnections`, which counts sessions.
        public var maxUnauthenticatedConnections: Int = 1_024
        /// Connections not yet authenticated from one source address at once.
        public var maxUnauthenticatedPerAddress: Int = 64
        /// Open connections to the HTTP listener (`/status`, `/metrics`) at once; more are closed at accept.
        public var maxHTTPConnections: Int = 64
        /// An HTTP connection idle this long (seconds) is closed.
        public var httpIdleTimeout: Double = 10

        public init(
            host: String = "127.0.0.1", port: Int = 7878, httpHost: String? = nil, httpPort: Int = 7879,
            writerPool: WriterPool.Configuration, flow: FlowController.Configuration = .init(),
            validation: ValidationPolicy = .init(), timeouts: SessionStateMachine.Timeouts = .init(),
            frameLimits: FrameLimits = .defaultNegotiated, pipelineConcurrency: Int = System.coreCount,
            maxFramesInPipelinePerConnection: Int = 64, maxConnections: Int = 10_000,
            tokens: TokenTable = TokenTable(), registryRefreshInterval: Double = 30, enrichmentDeadline: Double = 0.25,
            drainTimeout: Double = 20, eventLoopThreads: Int = System.coreCount, tls: TLS? = nil
        ) {
            self.host = host
            self.port = port
            self.httpHost = httpHost
            self.httpPort = httpPort
            self.writerPool = writerPool
            self.flow = flow
            self.validation = validation
            self.timeouts = timeouts
            self.frameLimits = frameLimits
            self.pipelineConcurrency = max(1, pipelineConcurrency)
            self.maxFramesInPipelinePerConnection = max(1, maxFramesInPipelinePerConnection)
            self.maxConnections = maxConnections
            self.tokens = tokens
            self.registryRefreshInterval = registryRefreshInterval
            self.enrichmentDeadline = enrichmentDeadline
            self.drainTimeout = drainTimeout
            self.eventLoopThreads = max(1, eventLoopThreads)
            self.tls = tls
        }
    }
}

extension SluiceServer.Configuration {
    /// `Welcome.max_batch_readings`: the validation limit, but never more than one connection can be granted
    /// (`FlowController.maxRequest`: the max window, within the budget), so every batch a client may send can
    /// get its credit.
    public var maxBatchReadings: Int {
        max(1, min(validation.maxBatchReadings, flow.maxRequest))
    }
}

extension SluiceServer {
    /// The build's version, as `/status` reports it.
    public static let version = "0.1.0"
}
