import Testing

@testable import SluiceClient

@Suite struct BackoffTests {
    @Test func delaysDoubleUpToTheCapWithJitterBelowTheCeiling() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var random = SystemRandomNumberGenerator()
        var ceilings: [Duration] = []
        for _ in 0..<6 {
            let ceiling = backoff.ceiling
            ceilings.append(ceiling)
            let d = backoff.next(using: &random)
            #expect(d <= ceiling && d >= ceiling / 2)
        }
        #expect(ceilings == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        backoff.reset()
        #expect(backoff.ceiling == .milliseconds(100))
    }
}
