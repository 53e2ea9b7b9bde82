/// Latencies in log-spaced buckets (2% wide), so percentiles of millions of samples cost a few KiB.
public struct LatencyHistogram: Sendable, Equatable {
    private static let growth = 1.02
    private static let logGrowth = log(growth)
    /// Bucket 0 holds everything up to 1 µs.
    private var counts: [UInt64] = []
    public private(set) var count: UInt64 = 0
    public private(set) var maxSeconds: Double = 0
    private var sumSeconds: Double = 0

    public init() {}

    private static func bucket(_ seconds: Double) -> Int {
        let micros = seconds * 1e6
        guard micros > 1 else { return 0 }
        return Int((log(micros) / logGrowth).rounded(.up))
    }

    /// The upper bound of bucket `i`, in seconds.
    private static func upper(_ i: Int) -> Double { pow(growth, Double(i)) / 1e6 }

    public mutating func record(seconds: Double) {
        let s = max(0, seconds)
        let b = Self.bucket(s)
        if b >= counts.count { counts.append(contentsOf: repeatElement(0, count: b - counts.count + 1)) }
        counts[b] += 1
        count += 1
        sumSeconds += s
        maxSeconds = max(maxSeconds, s)
    }

    public mutating func record(_ duration: Duration) { record(seconds: duration.seconds) }

    public mutating func merge(_ other: LatencyHistogram) {
        if other.counts.count > counts.count {
            counts.append(contentsOf: repeatElement(0, count: other.counts.count - counts.count))
        }
        for (i, c) in other.counts.enumerated() { counts[i] += c }
        count += other.count
        sumSeconds += other.sumSeconds
        maxSeconds = max(maxSeconds, other.maxSeconds)
    }

    /// The latency at or below which fraction `p` (0…1) of the samples fall, within 2%; 0 when empty.
    public func percentile(_ p: Double) -> Double {
        guard count > 0 else { return 0 }
        let rank = UInt64((Double(count) * min(max(p, 0), 1)).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= max(rank, 1) { return min(Self.upper(i), maxSeconds) }
        }
        return maxSeconds
    }

    public var meanSeconds: Double { count == 0 ? 0 : sumSeconds / Double(count) }
}

extension Duration {
    /// The duration in seconds, as a double.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
