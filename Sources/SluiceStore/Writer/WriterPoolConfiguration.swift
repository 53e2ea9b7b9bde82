import Foundation

extension WriterPool {
    /// How the pool connects, how many writers it runs and how much it buffers.
    public struct Configuration: Sendable {
        /// libpq connection URL (or key=value string) of the database holding `readings`.
        public var databaseURL: String
        /// Writer threads, each with its own connection. A producer always uses the same one.
        public var writers: Int
        /// Most readings one transaction (group commit) takes from a writer's queue; a single larger
        /// batch is still written whole.
        public var maxGroupReadings: Int
        /// Readings admitted but not yet committed, across all writers. `submit(_:) async` waits for room;
        /// the callback variant admits regardless (see `WriterPool.submit(_:completion:)`).
        public var queueCapacityReadings: Int
        /// First reconnect delay after a connection failure, seconds; doubles per attempt (with jitter).
        public var reconnectInitialDelay: Double
        /// Cap of the reconnect delay, seconds.
        public var reconnectMaxDelay: Double
        /// How long `shutdown()` keeps retrying an unreachable database before failing what is left, seconds.
        public var drainTimeout: Double
        /// Daily partitions of `readings` kept created before and after today (UTC).
        public var partitionDaysBack: Int
        public var partitionDaysAhead: Int
        /// How often writer 0 checks that the partitions ahead exist, seconds.
        public var partitionMaintenanceInterval: Double
        /// `application_name` of the connections, as seen in `pg_stat_activity`.
        public var applicationName: String
        /// How long a writer may be stalled (retrying a group PostgreSQL will not take for reasons other
        /// than its data: read-only, permissions, disk full, ...) before it logs an error, once per stall,
        /// seconds. It keeps retrying regardless: a stalled batch is never failed or skipped.
        public var stallErrorAfter: Double

        public init(
            databaseURL: String, writers: Int = 2, maxGroupReadings: Int = 20_000,
            queueCapacityReadings: Int = 1_000_000, reconnectInitialDelay: Double = 0.05,
            reconnectMaxDelay: Double = 2, drainTimeout: Double = 30, partitionDaysBack: Int = 7,
            partitionDaysAhead: Int = 3, partitionMaintenanceInterval: Double = 3600,
            applicationName: String = "sluiced", stallErrorAfter: Double = 60
        ) {
            self.databaseURL = databaseURL
            self.writers = writers
            self.maxGroupReadings = maxGroupReadings
            self.queueCapacityReadings = queueCapacityReadings
            self.reconnectInitialDelay = reconnectInitialDelay
            self.reconnectMaxDelay = reconnectMaxDelay
            self.drainTimeout = drainTimeout
            self.partitionDaysBack = partitionDaysBack
            self.partitionDaysAhead = partitionDaysAhead
            self.partitionMaintenanceInterval = partitionMaintenanceInterval
            self.applicationName = applicationName
            self.stallErrorAfter = stallErrorAfter
        }
    }
}

/// A snapshot of the pool's signals for the flow controller, metrics and `/status`.
public struct WriterPoolStats: Sendable, Equatable {
    /// Readings submitted but not yet taken by a writer (includes async submits waiting for room).
    public var queuedReadings: Int
    /// Readings queued plus those in a transaction being written.
    public var inFlightReadings: Int
    /// Median and 99th percentile of the last 1024 group transactions (BEGIN to COMMIT), seconds.
    public var commitLatencyP50Seconds: Double
    public var commitLatencyP99Seconds: Double
    public var committedBatches: Int
    public var duplicateBatches: Int
    public var failedBatches: Int
    /// Failed transactions and connection attempts (each is retried; none loses a batch).
    public var writerErrors: Int
    /// `writerErrors` by SQLSTATE class: "08", "25", "53"… or "connection" when PostgreSQL gave no SQLSTATE.
    public var writerErrorsByClass: [String: Int]
    /// Connections re-established after a failure.
    public var reconnects: Int
    /// False while a writer cannot connect to PostgreSQL.
    public var databaseReachable: Bool
    /// The configured bound, for comparison with `inFlightReadings`.
    public var queueCapacityReadings: Int
    /// Callback submits admitted while the pool was at capacity (the flow controller should prevent them).
    public var overCapacitySubmissions: Int
    /// Why the longest-stalled writer is not committing, nil when none is (see `WriterStall`).
    public var stall: WriterStall?
    /// Readings PostgreSQL refused for their data, dead-lettered (`REJECT_CODE_DATABASE_REFUSED`).
    public var refusedReadings: Int

    public init(
        queuedReadings: Int = 0, inFlightReadings: Int = 0, commitLatencyP50Seconds: Double = 0,
        commitLatencyP99Seconds: Double = 0, committedBatches: Int = 0, duplicateBatches: Int = 0,
        failedBatches: Int = 0, writerErrors: Int = 0, writerErrorsByClass: [String: Int] = [:], reconnects: Int = 0,
        databaseReachable: Bool = true,
        queueCapacityReadings: Int = 0, overCapacitySubmissions: Int = 0, stall: WriterStall? = nil,
        refusedReadings: Int = 0
    ) {
        self.queuedReadings = queuedReadings
        self.inFlightReadings = inFlightReadings
        self.commitLatencyP50Seconds = commitLatencyP50Seconds
        self.commitLatencyP99Seconds = commitLatencyP99Seconds
        self.committedBatches = committedBatches
        self.duplicateBatches = duplicateBatches
        self.failedBatches = failedBatches
        self.writerErrors = writerErrors
        self.writerErrorsByClass = writerErrorsByClass
        self.reconnects = reconnects
        self.databaseReachable = databaseReachable
        self.queueCapacityReadings = queueCapacityReadings
        self.overCapacitySubmissions = overCapacitySubmissions
        self.stall = stall
        self.refusedReadings = refusedReadings
    }
}

/// A writer holding its group back because PostgreSQL refuses it for a reason that is not about the data
/// (read-only after a failover, a revoked permission, a full disk, the connection): it retries until the
/// group commits. Credit should be withheld meanwhile; `/status` and the metrics say why.
public struct WriterStall: Sendable, Equatable {
    /// For people: what PostgreSQL said, with the SQLSTATE when it gave one.
    public var reason: String
    public var sqlState: String?
    /// When the writer first failed to commit the group it still holds.
    public var since: Date
    public var writer: Int

    public init(reason: String, sqlState: String?, since: Date, writer: Int) {
        self.reason = reason
        self.sqlState = sqlState
        self.since = since
        self.writer = writer
    }

    /// Seconds stalled so far.
    public var seconds: Double { max(0, Date().timeIntervalSince(since)) }
}
