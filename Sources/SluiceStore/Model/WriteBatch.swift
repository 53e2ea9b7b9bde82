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
public enum BatchOutcome: Sendable, Equatable {
    /// Its rows (and dead letters) were committed now.
    case committed
    /// (producer, seq) had already been committed; nothing was written again.
    case duplicate
    /// Retrying cannot fix it (e.g. PostgreSQL refused a value); the message says why.
    case failed(String)
}
