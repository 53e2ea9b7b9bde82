/// Accepted readings of one device and metric, by column, ready to be written to `readings`.
public struct RowSeries: Sendable {
    public var deviceID: String
    public var metric: String
    /// Reading times, Unix microseconds.
    public var times: [Int64]
    /// Calibrated values (enrichment applied), one per time.
    public var values: [Double]
    /// Quality codes, one per time; empty means all 0 (good). Stored as int4 by bit pattern.
    public var quality: [UInt32]
    public var site: String?
    public var unit: String?
    /// The registry lookup failed or timed out, so `site`/`unit`/calibration may be missing.
    public var enrichmentPartial: Bool

    public init(
        deviceID: String, metric: String, times: [Int64], values: [Double], quality: [UInt32] = [],
        site: String? = nil, unit: String? = nil, enrichmentPartial: Bool = false
    ) {
        self.deviceID = deviceID
        self.metric = metric
        self.times = times
        self.values = values
        self.quality = quality
        self.site = site
        self.unit = unit
        self.enrichmentPartial = enrichmentPartial
    }

    /// Number of readings.
    public var count: Int { times.count }
}

/// One rejected reading with its raw fields and why it was rejected; written to `dead_letters` in the same
/// transaction as its batch.
public struct DeadLetter: Sendable, Equatable {
    public var deviceID: String
    public var metric: String
    public var timeMicros: Int64
    public var value: Double
    public var quality: UInt32
    /// A `RejectCode` raw value.
    public var reasonCode: Int32
    /// For people, e.g. "value is NaN".
    public var reason: String

    public init(
        deviceID: String, metric: String, timeMicros: Int64, value: Double, quality: UInt32 = 0,
        reasonCode: Int32, reason: String
    ) {
        self.deviceID = deviceID
        self.metric = metric
        self.timeMicros = timeMicros
        self.value = value
        self.quality = quality
        self.reasonCode = reasonCode
        self.reason = reason
    }
}

/// One client batch as the writer pool stores it: exactly once per (producer, seq).
public struct WriteBatch: Sendable {
    public var producer: ProducerID
    /// Strictly increasing per producer, starting at 1.
    public var seq: UInt64
    public var series: [RowSeries]
    public var deadLetters: [DeadLetter]

    public init(producer: ProducerID, seq: UInt64, series: [RowSeries], deadLetters: [DeadLetter] = []) {
        self.producer = producer
        self.seq = seq
        self.series = series
        self.deadLetters = deadLetters
    }

    /// Accepted rows plus dead letters: the unit the write queue is bounded in.
    public var readingCount: Int { series.reduce(0) { $0 + $1.count } + deadLetters.count }

    /// Why the batch cannot be written as it is, or nil when it is well formed.
    var structuralProblem: String? {
        if seq == 0 { return "batch seq 0 of producer \(producer) is invalid: seqs start at 1" }
        if seq > UInt64(Int64.max) {
            return "batch seq \(seq) of producer \(producer) is too large (at most \(Int64.max))"
        }
        for (index, series) in series.enumerated() {
            if series.values.count != series.times.count {
                return "series \(index) (\(series.deviceID)/\(series.metric)) has \(series.times.count) times "
                    + "but \(series.values.count) values"
            }
            if !series.quality.isEmpty && series.quality.count != series.times.count {
                return "series \(index) (\(series.deviceID)/\(series.metric)) has \(series.times.count) times "
                    + "but \(series.quality.count) quality codes"
            }
        }
        return nil
    }
}

/// What became of a submitted batch; delivered only after COMMIT succeeded, or when it cannot succeed.
///
/// Errors that are not about a batch's data never complete it: the writer retries until it commits
/// (`WriterPool.stall` says why it is waiting). So `.failed` means only "not written, resend it".
public enum BatchOutcome: Sendable, Equatable {
    /// Its rows (and dead letters) were committed now. `refused`: readings PostgreSQL refused for their data
    /// (a constraint, a trigger, a value out of range), moved to `dead_letters` in the same transaction with
    /// PostgreSQL's reason; every other row is in `readings`.
    case committed(refused: [RefusedReading])
    /// (producer, seq) had already been committed; nothing was written again. The counts are the original
    /// outcome's: `rejected` = its rows in `dead_letters`, `accepted` = the batch's readings − that.
    case duplicate(accepted: Int, rejected: Int)
    /// Not written, and it will not be: the pool shut down before PostgreSQL came back, or the batch is
    /// malformed. The message says why; the client resends it.
    case failed(String)

    /// Committed now with every row in `readings`.
    public static let committedWhole = BatchOutcome.committed(refused: [])

    public var isCommitted: Bool { if case .committed = self { true } else { false } }
    public var isDuplicate: Bool { if case .duplicate = self { true } else { false } }
    /// Readings PostgreSQL refused in this commit (none for a duplicate or a failure).
    public var refused: [RefusedReading] { if case .committed(let refused) = self { refused } else { [] } }

    /// The same outcome with each refused reading's `row` replaced by `transform(row)`: for a caller that
    /// knows where the batch's rows came from (the server: their index in the client's batch).
    public func mappingRefusedRows(_ transform: (Int) -> Int) -> BatchOutcome {
        guard case .committed(var refused) = self, !refused.isEmpty else { return self }
        for i in refused.indices { refused[i].row = transform(refused[i].row) }
        return .committed(refused: refused)
    }
}

/// A reading PostgreSQL refused for its data; it went to `dead_letters` with `reasonCode` 6
/// (`REJECT_CODE_DATABASE_REFUSED`) and `reason`.
public struct RefusedReading: Sendable, Equatable {
    /// Which series of the `WriteBatch`, and which reading of it (0-based).
    public var series: Int
    public var index: Int
    /// The reading's position among all rows of the batch, counting across `series` in order (0-based).
    public var row: Int
    /// PostgreSQL's SQLSTATE (e.g. 23514 for a CHECK constraint), nil if it gave none.
    public var sqlState: String?
    /// PostgreSQL's message with the SQLSTATE, as stored in `dead_letters.reason`.
    public var reason: String

    public init(series: Int, index: Int, row: Int, sqlState: String?, reason: String) {
        self.series = series
        self.index = index
        self.row = row
        self.sqlState = sqlState
        self.reason = reason
    }
}

/// `RejectCode.databaseRefused` (REJECT_CODE_DATABASE_REFUSED) as stored in `dead_letters.reason_code`.
/// SluiceStore does not depend on the protocol module, so the raw value lives here.
public let databaseRefusedReasonCode: Int32 = 6
