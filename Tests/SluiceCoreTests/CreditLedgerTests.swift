import Testing

@testable import SluiceCore

@Suite struct CreditLedgerTests {
    @Test func batchWithinCreditMovesCreditInFlight() {
        var ledger = CreditLedger(initial: 1_000)
        #expect(ledger.batchReceived(readings: 400) == .accepted)
        #expect(ledger.held == 600 && ledger.inFlight == 400 && ledger.outstanding == 1_000)
    }

    @Test func batchOfExactlyTheCreditHeldIsAccepted() {
        var ledger = CreditLedger(initial: 1_000)
        #expect(ledger.batchReceived(readings: 1_000) == .accepted)
        #expect(ledger.held == 0)
    }

    @Test func batchLargerThanCreditIsAViolation() {
        var ledger = CreditLedger(initial: 1_000)
        #expect(ledger.batchReceived(readings: 1_001) == .violation(held: 1_000, sent: 1_001))
        #expect(ledger.held == 1_000 && ledger.inFlight == 0, "a violation changes nothing")
    }

    @Test func finishedReadingsLeaveTheLedger() {
        var ledger = CreditLedger(initial: 100)
        _ = ledger.batchReceived(readings: 60)
        ledger.finished(readings: 60)
        #expect(ledger.outstanding == 40)
    }

    @Test func grantsAddToCreditHeld() {
        var ledger = CreditLedger()
        ledger.granted(5)
        #expect(ledger.held == 5)
    }

    @Test func closingVoidsHeldCreditButKeepsInFlight() {
        var ledger = CreditLedger(initial: 100)
        _ = ledger.batchReceived(readings: 30)
        #expect(ledger.closeHeld() == 70)
        #expect(ledger.held == 0 && ledger.inFlight == 30)
    }

    /// The ledger charges what it is told; the flow controller tells it a batch's cost, never 0
    /// (`FlowController.cost(ofBatchWith:)`, tested in CreditRequestTests).
    @Test func theLedgerChargesWhatItIsTold() {
        var ledger = CreditLedger()
        #expect(ledger.batchReceived(readings: 0) == .accepted)
        #expect(ledger.batchReceived(readings: FlowController.cost(ofBatchWith: 0)) == .violation(held: 0, sent: 1))
    }
}
