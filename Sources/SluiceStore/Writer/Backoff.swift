/// Capped exponential backoff with jitter for reconnecting: the delay doubles per failed attempt up to
/// `maximum`, and a random half of it is shaved off so that writers (and daemons) do not retry in lockstep.
struct Backoff {
    var initial: Double
    var maximum: Double

    /// Seconds to wait before retry number `attempt` (0-based): uniformly in [d/2, d] where
    /// d = min(maximum, initial × 2^attempt).
    func delay(attempt: Int, using random: inout some RandomNumberGenerator) -> Double {
        let ceiling = min(maximum, initial * Double(1 << min(attempt, 30)))
        return ceiling / 2 + Double.random(in: 0...(ceiling / 2), using: &random)
    }

    func delay(attempt: Int) -> Double {
        var random = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &random)
    }
}
