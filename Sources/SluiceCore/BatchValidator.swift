import SluiceProtocol

/// Limits a reading must meet to be written to `readings` (DESIGN §3).
public struct ValidationPolicy: Sendable, Equatable {
    /// Readings older than now − maxAge are rejected (`TOO_OLD`). Default 7 days.
    public var maxAgeMicros: Int64
    /// Readings later than now + maxSkew are rejected (`IN_FUTURE`). Default 5 minutes.
    public var maxSkewMicros: Int64
    /// A batch holding more readings than this is rejected whole (`INVALID_ARGUMENT`); `Welcome` states it.
    public var maxBatchReadings: Int
    /// A batch holding more series than this is rejected whole (`INVALID_ARGUMENT`). Default 8,192.
    public var maxSeriesPerBatch: Int

    public init(
        maxAgeMicros: Int64 = 7 * 86_400 * 1_000_000, maxSkewMicros: Int64 = 5 * 60 * 1_000_000,
        maxBatchReadings: Int = 65_536, maxSeriesPerBatch: Int = 8_192
    ) {
        self.maxAgeMicros = maxAgeMicros
        self.maxSkewMicros = maxSkewMicros
        self.maxBatchReadings = maxBatchReadings
        self.maxSeriesPerBatch = max(1, maxSeriesPerBatch)
    }

    /// Device ids and metrics longer than this (bytes) are invalid (DESIGN §3); their readings are dead-lettered
    /// under a short description of the string, never the string.
    public static let maxStringBytes = 64

    /// The bounds `BatchShape.scan` checks on the wire bytes, before a batch is decoded.
    public var shapeLimits: BatchShapeLimits {
        BatchShapeLimits(
            maxReadings: maxBatchReadings, maxSeries: min(maxSeriesPerBatch, maxBatchReadings),
            maxStringBytes: Self.maxStringBytes)
    }
}

/// The readings of one series that passed validation, expanded to absolute times and raw values: the same
/// shape `Series.expand` produces, so validation filters that value instead of copying it into another type.
public typealias AcceptedSeries = ExpandedSeries

/// One reading that failed validation: it goes to the dead-letter table with its reason.
public struct RejectedReading: Sendable, Equatable {
    /// Index within the batch, counting across series in order.
    public var index: Int
    public var deviceID: String
    public var metric: String
    public var timeMicros: Int64
    public var value: Double
    public var quality: UInt32
    public var code: RejectCode
    /// For people, e.g. "value is NaN".
    public var message: String

    public init(
        index: Int, deviceID: String, metric: String, timeMicros: Int64, value: Double, quality: UInt32,
        code: RejectCode, message: String
    ) {
        self.index = index
        self.deviceID = deviceID
        self.metric = metric
        self.timeMicros = timeMicros
        self.value = value
        self.quality = quality
        self.code = code
        self.message = message
    }
}

/// A batch that passed the structural checks, its readings split into accepted and rejected.
public struct ValidatedBatch: Sendable {
    public var seq: UInt64
    public var accepted: [AcceptedSeries]
    public var rejected: [RejectedReading]

    /// The most rejection reasons an `Ack` carries.
    public static let maxReasons = 16

    public init(seq: UInt64, accepted: [AcceptedSeries], rejected: [RejectedReading]) {
        self.seq = seq
        self.accepted = accepted
        self.rejected = rejected
    }

    public var acceptedCount: Int { accepted.reduce(0) { $0 + $1.times.count } }

    /// The first rejections, as the `Ack` reports them.
    public var firstReasons: [Rejection] {
        rejected.prefix(Self.maxReasons).map { r in
            var rejection = Rejection()
            rejection.index = UInt32(clamping: r.index)
            rejection.code = r.code
            rejection.message = r.message
            return rejection
        }
    }
}

/// DESIGN §3 validation: structural problems reject the whole batch (`INVALID_ARGUMENT`, or
/// `PERMISSION_DENIED` for a device outside the token's scope); bad readings are set aside with a reason.
public enum BatchValidator {
    /// The readings a batch claims to hold: what it costs in credit.
    public static func readingCount(of batch: Batch) -> Int {
        batch.series.reduce(0) { $0 + $1.readingCount }
    }

    /// Validates `batch` at time `nowMicros` for a token allowed to write devices starting with `devicePrefix`.
    public static func validate(
        _ batch: Batch, policy: ValidationPolicy, nowMicros: Int64, devicePrefix: String = ""
    ) throws(WireError) -> ValidatedBatch {
        guard batch.seq >= 1 else {
            throw WireError(.invalidArgument, "batch seq is 0: seqs start at 1 and strictly increase per producer")
        }
        // Shape first, before any per-reading work (the same bounds `BatchShape.scan` checks on the wire).
        if batch.series.isEmpty {
            throw WireError(
                .invalidArgument, "batch \(batch.seq): holds no series and no readings: a batch must carry at least one reading")
        }
        let maxSeries = policy.shapeLimits.maxSeries
        if batch.series.count > maxSeries {
            throw WireError(
                .invalidArgument,
                "batch \(batch.seq): holds more than \(maxSeries) series (the limit per batch): merge readings of one device and metric into one series, or split the batch")
        }
        for (i, series) in batch.series.enumerated() {
            if series.readingCount == 0 {
                throw WireError(.invalidArgument, "batch \(batch.seq): series \(i) holds no readings: leave empty series out")
            }
        }
        let count = readingCount(of: batch)
        if count > policy.maxBatchReadings {
            throw WireError(
                .invalidArgument,
                "batch \(batch.seq) holds \(count) readings, above max_batch_readings (\(policy.maxBatchReadings)) from Welcome: split it")
        }
        if !devicePrefix.isEmpty {
            for (i, series) in batch.series.enumerated() where !series.deviceID.hasPrefix(devicePrefix) {
                throw WireError(
                    .permissionDenied,
                    "batch \(batch.seq), series \(i): device \(quoted(series.deviceID)) is outside this token's scope (devices starting with \(quoted(devicePrefix)))")
            }
        }
        var expanded: [ExpandedSeries] = []
        expanded.reserveCapacity(batch.series.count)
        for (i, series) in batch.series.enumerated() {
            do {
                expanded.append(try series.expand(index: i))
            } catch {
                throw WireError(error.code, "batch \(batch.seq): \(error.message)")
            }
        }

        let oldest = nowMicros &- policy.maxAgeMicros
        let newest = nowMicros &+ policy.maxSkewMicros
        var result = ValidatedBatch(seq: batch.seq, accepted: [], rejected: [])
        result.accepted.reserveCapacity(expanded.count)
        var index = 0
        for series in expanded {
            defer { index += series.count }
            // An id or metric over 64 bytes is stored in its dead letters (and named in messages) only as a
            // short description: its first 16 bytes, its length and a hash. One string per series, shared by
            // every dead letter of it, so memory follows the readings, not what the string weighs.
            let storedDevice = storable(series.deviceID)
            let storedMetric = storable(series.metric)
            let seriesProblem: (RejectCode, String)? =
                if !isValidDeviceID(series.deviceID) {
                    (.badDeviceID, "device id \(storedDevice == series.deviceID ? quoted(series.deviceID) : storedDevice) is not 1–64 bytes of [A-Za-z0-9._:-]")
                } else if !isValidMetric(series.metric) {
                    (.badMetric, "metric \(storedMetric == series.metric ? quoted(series.metric) : storedMetric) is not 1–64 bytes of [a-z0-9_.]")
                } else { nil }

            var accepted = AcceptedSeries(
                deviceID: series.deviceID, metric: series.metric, times: [], values: [], quality: [])
            accepted.times.reserveCapacity(series.count)
            accepted.values.reserveCapacity(series.count)
            for i in 0..<series.count {
                let t = series.times[i]
                let v = series.values[i]
                let q = series.quality.isEmpty ? 0 : series.quality[i]
                let problem: (RejectCode, String)? =
                    if let seriesProblem { seriesProblem }
                    else if !v.isFinite { (.valueNotFinite, "value is \(v.isNaN ? "NaN" : v > 0 ? "+infinity" : "-infinity")") }
                    else if t < oldest {
                        (.tooOld, "timestamp \(Timestamp.iso8601(micros: t)) is \(Timestamp.age(micros: nowMicros &- t)) old; the limit is \(Timestamp.age(micros: policy.maxAgeMicros)) (max age)")
                    } else if t > newest {
                        (.inFuture, "timestamp \(Timestamp.iso8601(micros: t)) is \(Timestamp.age(micros: t &- nowMicros)) in the future; the limit is \(Timestamp.age(micros: policy.maxSkewMicros)) (max clock skew)")
                    } else { nil }
                if let (code, message) = problem {
                    result.rejected.append(
                        RejectedReading(
                            index: index + i, deviceID: storedDevice, metric: storedMetric, timeMicros: t,
                            value: v, quality: q, code: code, message: message))
                    continue
                }
                if !series.quality.isEmpty {
                    if accepted.quality.isEmpty && q != 0 {
                        accepted.quality = Array(repeating: 0, count: accepted.times.count)
                    }
                    if !accepted.quality.isEmpty { accepted.quality.append(q) }
                }
                accepted.times.append(t)
                accepted.values.append(v)
            }
            if !accepted.times.isEmpty { result.accepted.append(accepted) }
        }
        return result
    }

    /// `text` itself when it is at most 64 bytes; otherwise its description: `"first 16 bytes…" (N bytes, fnv1a H)`.
    static func storable(_ text: String) -> String {
        guard text.utf8.count > ValidationPolicy.maxStringBytes else { return text }
        return text.utf8.withContiguousStorageIfAvailable { describeOversized(UnsafeRawBufferPointer($0)) }
            ?? "(\(text.utf8.count) bytes)"
    }

    /// 1–64 bytes of `[A-Za-z0-9._:-]`.
    public static func isValidDeviceID(_ id: String) -> Bool {
        let bytes = id.utf8
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: ":") || b == UInt8(ascii: "-")
        }
    }

    /// 1–64 bytes of `[a-z0-9_.]`.
    public static func isValidMetric(_ metric: String) -> Bool {
        let bytes = metric.utf8
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: ".") || b == UInt8(ascii: "_")
        }
    }

    /// `text` in quotes, cut to a readable length, control characters escaped.
    static func quoted(_ text: String) -> String {
        let cut = text.unicodeScalars.count > 80 ? String(String.UnicodeScalarView(text.unicodeScalars.prefix(80))) + "…" : text
        return "\"" + cut.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? $0.escaped(asASCII: true) : String($0) }.joined() + "\""
    }
}

/// Formatting of Unix-microsecond timestamps for messages, without Foundation.
public enum Timestamp {
    /// `2024-05-01T12:00:00.250000Z`.
    public static func iso8601(micros: Int64) -> String {
        let (secondsTotal, fraction) = micros.quotientAndRemainder(dividingBy: 1_000_000)
        var seconds = secondsTotal
        var frac = fraction
        if frac < 0 {
            frac += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secOfDay = seconds % 86_400
        if secOfDay < 0 {
            secOfDay += 86_400
            days -= 1
        }
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let time = "\(two(secOfDay / 3600)):\(two(secOfDay / 60 % 60)):\(two(secOfDay % 60))"
        let fractionText = frac == 0 ? "" : "." + String(String(frac + 1_000_000).dropFirst())
        return "\(y)-\(two(m))-\(two(d))T\(time)\(fractionText)Z"
    }

    /// A duration in the largest unit that reads well: "7 days", "8.5 days", "5 minutes", "12 s".
    public static func age(micros: Int64) -> String {
        let seconds = Double(micros) / 1_000_000
        func unit(_ value: Double, _ name: String) -> String {
            let rounded = (value * 10).rounded() / 10
            let text = rounded == rounded.rounded() ? String(Int64(rounded)) : String(rounded)
            return "\(text) \(name)\(rounded == 1 ? "" : "s")"
        }
        if seconds >= 86_400 { return unit(seconds / 86_400, "day") }
        if seconds >= 3600 { return unit(seconds / 3600, "hour") }
        if seconds >= 60 { return unit(seconds / 60, "minute") }
        return unit(seconds, "second")
    }
}
