/// How a `SluiceClient` connects and batches.
public struct SluiceClientConfiguration: Sendable {
    /// Servers tried in turn; after a failure the next one is tried.
    public var endpoints: [Endpoint]
    /// Bearer token (empty when the server accepts anonymous loopback clients).
    public var token: String
    /// Where the producer identity comes from.
    public var producer: ProducerSource
    /// Largest batch the client cuts, in readings (the server's `max_batch_readings` caps it further).
    public var maxBatchReadings: Int
    /// Bytes of unacknowledged batches (plus queued readings) held before `send` waits.
    public var bufferCapacityBytes: Int
    /// zstd-compress batches when that makes them smaller.
    public var compression: Bool
    /// Reconnect delays: capped exponential, with jitter.
    public var reconnectInitialDelay: Duration
    public var reconnectMaxDelay: Duration
    /// How long a TCP connect and then the handshake may take.
    public var connectTimeout: Duration
    /// Heartbeat interval used until the server states its own in `Welcome`.
    public var defaultHeartbeat: Duration
    /// For the server's logs.
    public var clientName: String
    public var clientVersion: String
    /// TLS to the server; nil = plain TCP (the default, and what a server without `--tls-cert` speaks).
    public var tls: ClientTLS?
    /// A durable spool on disk: batches are written there before `send` returns and resent from there after
    /// a restart. The spool keeps the producer identity; `producer` then only seeds a new spool (from a
    /// `.stateFile` that exists), so a gateway moving to a spool stays the same producer.
    public var spool: SpoolConfiguration?

    public init(
        endpoints: [Endpoint], token: String = "", producer: ProducerSource = .ephemeral,
        maxBatchReadings: Int = 5_000, bufferCapacityBytes: Int = 64 << 20, compression: Bool = true,
        reconnectInitialDelay: Duration = .milliseconds(50), reconnectMaxDelay: Duration = .seconds(2),
        connectTimeout: Duration = .seconds(5), defaultHeartbeat: Duration = .seconds(10),
        clientName: String = "SluiceClient", clientVersion: String = sluiceClientVersion, tls: ClientTLS? = nil,
        spool: SpoolConfiguration? = nil
    ) {
        self.endpoints = endpoints
        self.token = token
        self.producer = producer
        self.maxBatchReadings = maxBatchReadings
        self.bufferCapacityBytes = bufferCapacityBytes
        self.compression = compression
        self.reconnectInitialDelay = reconnectInitialDelay
        self.reconnectMaxDelay = reconnectMaxDelay
        self.connectTimeout = connectTimeout
        self.defaultHeartbeat = defaultHeartbeat
        self.clientName = clientName
        self.clientVersion = clientVersion
        self.tls = tls
        self.spool = spool
    }
}

/// The version of this client library and CLI.
public let sluiceClientVersion = "0.1.0"

/// Where a client's producer identity (and seq) come from.
public enum ProducerSource: Sendable, Equatable {
    /// A random identity for this client's lifetime; seqs start at 1. Fine for one-shot runs: a restarted
    /// process is a new producer, so nothing it sends can be mistaken for a duplicate.
    case ephemeral
    /// A fixed identity with the first seq to use. The caller keeps the seq increasing across runs.
    case fixed(ProducerIdentity, nextSeq: UInt64)
    /// Identity and seq kept in this file (created if absent), so a restarted producer keeps both.
    case stateFile(String)
}
