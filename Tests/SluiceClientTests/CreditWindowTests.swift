import Testing

@testable import SluiceClient

@Suite struct CreditWindowTests {
    @Test func welcomeOpensTheWindowAndBatchesNarrowIt() {
        var window = CreditWindow()
        #expect(!window.allows(1))
        window.reset(initial: 1_000)
        #expect(window.allows(1_000))
        #expect(!window.allows(1_001))
        window.consume(600)
        #expect(window.held == 400)
        window.grant(100)
        #expect(window.held == 500)
    }

    @Test func aNewSessionForgetsTheOldCredit() {
        var window = CreditWindow(initial: 5_000)
        window.reset(initial: 10)
        #expect(window.held == 10)
    }

    @Test func grantsSaturateInsteadOfOverflowing() {
        var window = CreditWindow(initial: .max - 1)
        window.grant(10)
        #expect(window.held == .max)
    }

    @Test func resendsGoFirstAndAreNeverSplit() {
        #expect(TransmitPlanner.decide(credit: 100, nextResendReadings: 100, pendingReadings: 50, maxBatchReadings: 10) == .resend)
        #expect(
            TransmitPlanner.decide(credit: 99, nextResendReadings: 100, pendingReadings: 50, maxBatchReadings: 10)
                == .waitForCredit)
    }

    @Test func aBatchThatDoesNotFitTheCreditIsSplit() {
        #expect(TransmitPlanner.decide(credit: 300, nextResendReadings: nil, pendingReadings: 1_000, maxBatchReadings: 5_000) == .cut(readings: 300))
    }

    @Test func batchesAreCappedByTheBatchSizeAndWhatIsPending() {
        #expect(TransmitPlanner.decide(credit: 10_000, nextResendReadings: nil, pendingReadings: 7_000, maxBatchReadings: 5_000) == .cut(readings: 5_000))
        #expect(TransmitPlanner.decide(credit: 10_000, nextResendReadings: nil, pendingReadings: 42, maxBatchReadings: 5_000) == .cut(readings: 42))
    }

    @Test func withoutCreditPendingReadingsWait() {
        #expect(TransmitPlanner.decide(credit: 0, nextResendReadings: nil, pendingReadings: 1, maxBatchReadings: 5_000) == .waitForCredit)
        #expect(TransmitPlanner.decide(credit: 0, nextResendReadings: nil, pendingReadings: 0, maxBatchReadings: 5_000) == .idle)
    }

    @Test func aResendAsksForItsWholeSize() {
        #expect(CreditPlanner.need(nextResendReadings: 1_000, pendingReadings: 50, maxBatchReadings: 500, serverMaxBatchReadings: 65_536) == 1_000)
    }

    @Test func newReadingsAskForABatchOfWhatIsPending() {
        #expect(CreditPlanner.need(nextResendReadings: nil, pendingReadings: 50, maxBatchReadings: 500, serverMaxBatchReadings: 65_536) == 50)
        #expect(CreditPlanner.need(nextResendReadings: nil, pendingReadings: 5_000, maxBatchReadings: 500, serverMaxBatchReadings: 65_536) == 500)
        #expect(CreditPlanner.need(nextResendReadings: nil, pendingReadings: 0, maxBatchReadings: 500, serverMaxBatchReadings: 65_536) == nil)
    }

    @Test func aResendAboveTheServersMaxBatchIsNotAskedFor() {
        #expect(CreditPlanner.need(nextResendReadings: 70_000, pendingReadings: 0, maxBatchReadings: 500, serverMaxBatchReadings: 65_536) == nil)
        #expect(CreditPlanner.need(nextResendReadings: 70_000, pendingReadings: 0, maxBatchReadings: 500, serverMaxBatchReadings: 0) == 70_000)
    }
}
