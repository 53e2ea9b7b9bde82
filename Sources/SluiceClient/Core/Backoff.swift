/// Capped exponential backoff with jitter for reconnects: initial, ×2 per failure, up to `maximum`, each delay
/// drawn uniformly from [½d, d] so a fleet of producers restarted together does not reconnect in lockstep.
public struct Backoff: Sendable, Equatable {
    public let initial: Duration
    public let maximum: Duration
    public private(set) var failures: Int = 0

    public init(initial: Duration = .milliseconds(50), maximum: Duration = .seconds(5)) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    /// The ceiling of the next delay, before jitter.
    public var ceiling: Duration {
        var d = initial
        for _ in 0..<min(failures, 40) {
            d = d * 2
            if d >= maximum { return maximum }
        }
        return d
    }

    /// The delay before the next attempt; counts one more failure.
    public mutating func next<R: RandomNumberGenerator>(using random: inout R) -> Duration {
        let c = ceiling
        failures += 1
        let fraction = Double.random(in: 0.5...1.0, using: &random)
        return c * fraction
    }

    public mutating func next() -> Duration {
        var random = SystemRandomNumberGenerator()
        return next(using: &random)
    }

    /// A session opened: start small again.
    public mutating func reset() { failures = 0 }
}
