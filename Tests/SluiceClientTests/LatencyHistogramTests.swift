import Testing

@testable import SluiceClient

@Suite struct LatencyHistogramTests {
    @Test func percentilesAreWithinTwoPercent() {
        var h = LatencyHistogram()
        for i in 1...10_000 { h.record(seconds: Double(i) / 1_000_000 * 100) }  // 0.1 ms … 1 s
        for (p, exact) in [(0.5, 0.5), (0.99, 0.99), (0.999, 0.999)] {
            let got = h.percentile(p)
            #expect(abs(got - exact) / exact < 0.025, "p\(p): \(got) vs \(exact)")
        }
        #expect(h.count == 10_000)
        #expect(h.maxSeconds == 1.0)
    }

    @Test func mergingAddsTheSamples() {
        var a = LatencyHistogram()
        var b = LatencyHistogram()
        a.record(seconds: 0.001)
        b.record(seconds: 0.1)
        a.merge(b)
        #expect(a.count == 2)
        #expect(a.percentile(1) == 0.1)
        #expect(LatencyHistogram().percentile(0.5) == 0)
    }
}
