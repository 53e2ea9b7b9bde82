/// The durations of the most recent commits (a ring of fixed size), for the p50/p99 the flow controller
/// watches. Old commits fall out, so the figures follow the database's current state.
struct LatencyWindow {
    private var samples: [Double]
    private var next = 0
    private var filled = 0

    init(size: Int = 1024) { samples = Array(repeating: 0, count: max(1, size)) }

    mutating func record(_ seconds: Double) {
        samples[next] = seconds
        next = (next + 1) % samples.count
        filled = min(filled + 1, samples.count)
    }

    /// The `fraction` quantile (0...1) of the window by nearest rank; 0 when nothing was recorded yet.
    func quantile(_ fraction: Double) -> Double {
        guard filled > 0 else { return 0 }
        let sorted = samples[0..<filled].sorted()
        let rank = Int((fraction * Double(filled)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), filled - 1)]
    }
}
