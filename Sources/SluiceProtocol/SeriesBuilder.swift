/// Builds one columnar `Series`, choosing the value column that costs least without losing anything.
///
/// Values are kept as scaled integers (`decimal_exponent` plus packed sint64 deltas) when every value is an
/// exact decimal at some common exponent, e.g. 21.37, 21.38 → exponent −2, deltas 2137, +1. Varint deltas
/// of a slowly changing sensor are one byte each, which zstd then squeezes further. Anything that would not
/// survive the round trip bit for bit (NaN, ±infinity, −0.0, 0.1 + 0.2, huge magnitudes) forces the plain
/// double column for the whole series.
public struct SeriesBuilder: Sendable {
    public let deviceID: String
    public let metric: String
    public private(set) var times: [Int64] = []
    public private(set) var values: [Double] = []
    public private(set) var quality: [UInt32] = []
    private var anyQuality = false

    public init(deviceID: String, metric: String, reservingCapacity capacity: Int = 0) {
        self.deviceID = deviceID
        self.metric = metric
        times.reserveCapacity(capacity)
        values.reserveCapacity(capacity)
    }

    public var count: Int { times.count }
    public var isEmpty: Bool { times.isEmpty }

    /// Adds one reading. `timeMicros` is Unix time in microseconds; `quality` 0 means good.
    public mutating func append(timeMicros: Int64, value: Double, quality code: UInt32 = 0) {
        times.append(timeMicros)
        values.append(value)
        if code != 0 && !anyQuality {
            anyQuality = true
            quality = Array(repeating: 0, count: times.count - 1)
        }
        if anyQuality { quality.append(code) }
    }

    /// The wire form. Times become a base plus deltas (the first delta is 0).
    public func build() -> Series {
        var series = Series()
        series.deviceID = deviceID
        series.metric = metric
        guard let first = times.first else { return series }
        series.baseTimeUs = first
        var deltas = [Int64]()
        deltas.reserveCapacity(times.count)
        var previous = first
        for t in times {
            deltas.append(t &- previous)
            previous = t
        }
        series.timeDeltasUs = deltas
        if let exponent = DecimalScaling.commonExponent(values) {
            var scaled = [Int64]()
            scaled.reserveCapacity(values.count)
            var previousScaled: Int64 = 0
            for v in values {
                let k = DecimalScaling.scaled(v, exponent: exponent)
                scaled.append(k &- previousScaled)
                previousScaled = k
            }
            series.decimalExponent = Int32(exponent)
            series.scaledDeltas = scaled
        } else {
            series.values = values
        }
        if anyQuality { series.quality = quality }
        return series
    }
}

/// The decimal scaling rule shared by encoder and decoder: value = k / 10^−e (e < 0) or k × 10^e (e ≥ 0).
///
/// Division by an exact power of ten is correctly rounded, so if a double is the nearest double to a decimal
/// with at most −e fraction digits, k / 10^−e gives exactly that double back.
public enum DecimalScaling {
    /// Exponents the wire accepts. 10^15 is exact in a double, and so is every |k| ≤ 2^53.
    public static let exponentRange: ClosedRange<Int> = -15...15
    static let maxExactInteger: Double = 9_007_199_254_740_992  // 2^53

    private static let powers: [Double] = (0...15).map { p in (0..<p).reduce(1.0) { r, _ in r * 10 } }

    /// The value that scaled integer `k` stands for at `exponent`.
    @inline(__always)
    public static func value(scaled k: Int64, exponent: Int) -> Double {
        exponent >= 0 ? Double(k) * powers[exponent] : Double(k) / powers[-exponent]
    }

    @inline(__always)
    static func scaled(_ v: Double, exponent: Int) -> Int64 {
        let s = exponent >= 0 ? v / powers[exponent] : v * powers[-exponent]
        return Int64(s.rounded())
    }

    /// True if `v` comes back bit for bit from its scaled integer at `exponent`.
    static func isExact(_ v: Double, exponent: Int) -> Bool {
        guard v.isFinite else { return false }
        let s = exponent >= 0 ? v / powers[exponent] : v * powers[-exponent]
        guard abs(s) <= maxExactInteger else { return false }
        let k = Int64(s.rounded())
        return value(scaled: k, exponent: exponent).bitPattern == v.bitPattern
    }

    /// The largest exponent at or below 0 at which every value is exact, or nil if there is none (then the
    /// series uses the double column). Positive exponents are not tried: integers already cost little.
    public static func commonExponent(_ values: [Double]) -> Int? {
        var exponent = 0
        for v in values {
            if isExact(v, exponent: exponent) { continue }
            var e = exponent - 1
            while e >= -9, !isExact(v, exponent: e) { e -= 1 }
            if e < -9 { return nil }
            exponent = e
        }
        // A value exact at a coarser exponent is exact at a finer one only if it stays below 2^53 there.
        if exponent < 0 {
            for v in values where !isExact(v, exponent: exponent) { return nil }
        }
        return exponent
    }
}
