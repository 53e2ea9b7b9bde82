import SluiceProtocol
import Testing

@testable import SluiceCore

/// Credit recalls (`CreditRecall` / `CreditReturn`): credit idle connections hold never pins the budget a
/// waiting request needs (issue 14: the delivery simulation's seed 2841 found three finished producers holding
/// all of it, and a producer waiting for ever).
@Suite struct CreditRecallTests {
    typealias Grant = FlowController.Grant
    typealias Recall = FlowController.Recall

    /// Budget 1,000; three connections that answer recalls each stream one batch and go idle holding their
    /// top-ups (what a gateway between bursts holds).
    func idleHolders(reservationTimeout: UInt64 = 5_000_000_000) -> (FlowController, [UInt64: Int]) {
        var flow = FlowController(
            configuration: .init(
                budget: 1_000, maxWindow: 1_000, initialWindow: 300, minimumWindow: 10, unprovenShare: 1,
                reservationTimeout: reservationTimeout))
        var held: [UInt64: Int] = [:]
        for id in 1...3 as ClosedRange<UInt64> { held[id] = flow.open(id, returnsCredit: true) }
        for id in 1...3 as ClosedRange<UInt64> {
            #expect(flow.batchReceived(id, readings: 300) == .accepted)
            held[id]! -= 300
        }
        for id in 1...3 as ClosedRange<UInt64> {
            for g in flow.finished(id, readings: 300) { held[g.connection, default: 0] += g.readings }
        }
        return (flow, held)
    }

    @Test func idleCreditIsRecalledForAWaitingRequestAndTheRequestIsGrantedOnceItIsBack() {
        var (flow, held) = idleHolders()
        #expect(flow.takeRecalls().isEmpty, "nobody waits: nothing is recalled")
        let idleHeld = held.values.reduce(0, +)
        #expect(idleHeld >= 900, "the idle connections hold most of the budget (\(idleHeld))")
        // A fourth connection needs 800 for its batch.
        held[4] = flow.open(4, returnsCredit: true)
        #expect(flow.request(4, readings: 800).isEmpty, "not enough is free")
        let recalls = flow.takeRecalls()
        #expect(!recalls.isEmpty)
        #expect(recalls.allSatisfy { $0.connection != 4 && $0.readings == held[$0.connection] }, "everything an idle one holds")
        #expect(flow.recallsPending == recalls.reduce(0) { $0 + $1.readings })
        #expect(flow.configuration.budget - flow.outstanding + flow.recallsPending >= 800 - held[4]!, "enough is recalled")
        #expect(Set(recalls.map(\.connection)).count == recalls.count, "one recall per connection")
        // The clients give back what they hold.
        var granted: [Grant] = []
        for r in recalls {
            guard case .accepted(let grants) = flow.returned(r.connection, readings: held[r.connection]!) else {
                Issue.record("a return of what was held was refused")
                return
            }
            held[r.connection] = 0
            granted += grants
        }
        #expect(granted.contains { $0.connection == 4 })
        for g in granted { held[g.connection, default: 0] += g.readings }
        #expect(held[4]! >= 800, "the waiting request is granted whole")
        #expect(flow.recallsPending == 0)
        #expect(flow.outstanding <= 1_000)
        #expect(flow.takeRecalls().isEmpty, "a recall is asked once")
        for id in 1...4 as ClosedRange<UInt64> { #expect(flow.ledger(id)!.held == held[id]!) }
    }

    @Test func theBiggestHoldersAreRecalledFirstAndOnlyAsMuchAsTheLineNeeds() {
        // 1 and 2 hold 400 each, 3 holds 200: all idle.
        var flow = FlowController(
            configuration: .init(budget: 1_000, maxWindow: 1_000, initialWindow: 400, minimumWindow: 10, unprovenShare: 1))
        #expect(flow.open(1, returnsCredit: true) == 400)
        #expect(flow.open(2, returnsCredit: true) == 400)
        #expect(flow.open(3, returnsCredit: true) == 200)
        #expect(flow.outstanding == 1_000)
        #expect(flow.open(4, returnsCredit: true) == 0)
        #expect(flow.request(4, readings: 300).isEmpty)
        let recalls = flow.takeRecalls()
        #expect(recalls == [Recall(connection: 1, readings: 400)], "the biggest holder, lowest id first, and no more")
    }

    @Test func creditGrantedForARequestIsTheAskersUntilItGoesUnusedForTheReservationTimeout() {
        var flow = FlowController(
            configuration: .init(
                budget: 1_000, maxWindow: 1_000, initialWindow: 10, minimumWindow: 10, unprovenShare: 1,
                reservationTimeout: 5_000_000_000))
        _ = flow.advance(to: 1_000_000_000)
        for id in 1...2 as ClosedRange<UInt64> { #expect(flow.open(id, returnsCredit: true) == 10) }
        // 1 asks for 900 and gets it; it has not sent yet when 2 asks for 500.
        #expect(flow.request(1, readings: 900) == [Grant(connection: 1, readings: 890)])
        #expect(flow.request(2, readings: 500).isEmpty)
        #expect(flow.takeRecalls().isEmpty, "a fresh grant for a request is not recalled: the asker is about to use it")
        _ = flow.advance(to: 5_000_000_000)
        #expect(flow.takeRecalls().isEmpty, "4 s later still not")
        // 1 never sends (a broken or hostile client): after the timeout its grant is recalled.
        _ = flow.advance(to: 6_000_000_001)
        #expect(flow.takeRecalls() == [Recall(connection: 1, readings: 900)])
        guard case .accepted(let grants) = flow.returned(1, readings: 900) else {
            Issue.record("return refused")
            return
        }
        #expect(grants == [Grant(connection: 2, readings: 490)])
    }

    @Test func aGrantUsedInTimeIsNeverRecalled() {
        var flow = FlowController(
            configuration: .init(budget: 1_000, maxWindow: 1_000, initialWindow: 10, minimumWindow: 10, unprovenShare: 1))
        #expect(flow.open(1, returnsCredit: true) == 10)
        #expect(flow.open(2, returnsCredit: true) == 10)
        _ = flow.request(1, readings: 900)
        _ = flow.request(2, readings: 500)
        #expect(flow.batchReceived(1, readings: 900) == .accepted)
        _ = flow.advance(to: 60_000_000_000)
        #expect(flow.takeRecalls().isEmpty, "in flight, not idle")
        let grants = flow.finished(1, readings: 900)
        #expect(grants.contains(Grant(connection: 2, readings: 490)))
    }

    /// Askers in line that each hold part of what they asked for, together more than the budget: without
    /// recalling from those behind the head, none could ever be served (the simulation's seed 21995).
    @Test func askersEachHoldingPartOfTheirRequestAreAllServed() {
        var flow = FlowController(
            configuration: .init(budget: 300, maxWindow: 300, initialWindow: 100, minimumWindow: 10, unprovenShare: 1))
        var held: [UInt64: Int] = [:]
        for id in 1...3 as ClosedRange<UInt64> { held[id] = flow.open(id, returnsCredit: true) }
        #expect(flow.outstanding == 300)
        // Each has a batch of 10 in flight and asks for 250 for its next: none is idle, nothing is recalled.
        for id in 1...3 as ClosedRange<UInt64> {
            #expect(flow.batchReceived(id, readings: 10) == .accepted)
            held[id]! -= 10
        }
        for id in 1...3 as ClosedRange<UInt64> { #expect(flow.request(id, readings: 250).isEmpty) }
        #expect(flow.takeRecalls().isEmpty)
        // The batches commit: 30 free, the head lacks 160, and the two behind it hold 180 between them.
        for id in 1...3 as ClosedRange<UInt64> {
            for g in flow.finished(id, readings: 10) { held[g.connection, default: 0] += g.readings }
        }
        var served: [UInt64] = []
        var rounds = 0
        while served.count < 3 && rounds < 50 {
            rounds += 1
            var grants: [Grant] = []
            for r in flow.takeRecalls() {
                #expect(r.connection != served.last, "the head is not recalled")
                let given = min(r.readings, held[r.connection]!)
                held[r.connection]! -= given
                guard case .accepted(let g) = flow.returned(r.connection, readings: given) else {
                    Issue.record("return refused")
                    return
                }
                grants += g
            }
            for g in grants { held[g.connection, default: 0] += g.readings }
            // Whoever holds its 250 sends it; it commits; it asks again only if not yet served.
            for id in 1...3 as ClosedRange<UInt64> where !served.contains(id) && held[id]! >= 250 {
                #expect(flow.batchReceived(id, readings: 250) == .accepted)
                held[id]! -= 250
                served.append(id)
                for g in flow.finished(id, readings: 250) { held[g.connection, default: 0] += g.readings }
            }
            #expect(flow.outstanding <= 400)
        }
        #expect(served == [1, 2, 3], "all served, in the order they asked")
    }

    @Test func anOlderClientIsNeverRecalled() {
        var flow = FlowController(
            configuration: .init(budget: 1_000, maxWindow: 1_000, initialWindow: 500, minimumWindow: 10, unprovenShare: 1))
        #expect(flow.open(1) == 500)
        #expect(flow.open(2) == 500)
        #expect(flow.open(3, returnsCredit: true) == 0)
        #expect(flow.request(3, readings: 300).isEmpty)
        _ = flow.advance(to: 3_600_000_000_000)
        #expect(flow.takeRecalls().isEmpty, "it does not read CreditRecall")
        // It is served once an older client's credit comes back in the usual way.
        #expect(flow.batchReceived(1, readings: 500) == .accepted)
        let grants = flow.finished(1, readings: 500)
        #expect(grants.first { $0.connection == 3 }.map { $0.readings >= 300 } == true, "its request is granted whole")
    }

    @Test func givingBackMoreThanHeldIsAViolationAndChangesNothing() {
        var flow = FlowController(configuration: .init(budget: 1_000, maxWindow: 1_000, initialWindow: 100, minimumWindow: 10))
        #expect(flow.open(1, returnsCredit: true) == 100)
        #expect(flow.returned(1, readings: 101) == .violation(held: 100, returned: 101))
        #expect(flow.ledger(1)!.held == 100)
        #expect(flow.outstanding == 100)
        // Unasked returns are fine (a client going idle), and 0 is.
        #expect(flow.returned(1, readings: 0) == .accepted([]))
        #expect(flow.returned(1, readings: 40) == .accepted([]))
        #expect(flow.ledger(1)!.held == 60)
        #expect(flow.outstanding == 60)
    }

    @Test func aRecalledConnectionThatClosesSettlesItsRecall() {
        var (flow, _) = idleHolders()
        _ = flow.open(4, returnsCredit: true)
        _ = flow.request(4, readings: 800)
        let recalls = flow.takeRecalls()
        #expect(!recalls.isEmpty)
        for r in recalls { _ = flow.close(r.connection) }
        #expect(flow.recallsPending == 0)
        #expect(flow.ledger(4)!.held >= 800, "closing returned the credit too")
    }

    @Test func aClientThatGaveItsCreditBackIsNotToppedUpAgainUnasked() {
        var (flow, held) = idleHolders()
        _ = flow.open(4, returnsCredit: true)
        _ = flow.request(4, readings: 800)
        for r in flow.takeRecalls() {
            if case .accepted(let grants) = flow.returned(r.connection, readings: held[r.connection]!) {
                for g in grants { held[g.connection, default: 0] += g.readings }
            }
            held[r.connection] = 0
        }
        // 4 sends its batch and it commits: the budget frees, but the idle ones did not ask.
        #expect(flow.batchReceived(4, readings: 800) == .accepted)
        let grants = flow.finished(4, readings: 800)
        for g in grants where g.connection != 4 {
            Issue.record("idle connection \(g.connection) topped up with \(g.readings) it did not ask for")
        }
    }

    // MARK: The session's side

    @Test func anUnansweredRecallClosesTheSessionAfterThreeHeartbeats() {
        var machine = SessionStateMachine(now: 0, timeouts: .init(heartbeatInterval: 1_000_000_000))
        open(&machine)
        let sent = machine.recallSent(now: 10_000_000)
        #expect(sent)
        machine.frameReceived(now: 2_000_000_000)
        _ = machine.tick(now: 2_000_000_000)
        machine.frameReceived(now: 3_010_000_000)
        guard case .sendError(let error, _, let closing)? = machine.tick(now: 3_020_000_000) else {
            Issue.record("no error after 3 heartbeat intervals without CreditReturn")
            return
        }
        #expect(closing)
        #expect(error.code == .failedPrecondition)
        #expect(error.message.contains("CreditRecall not answered"))
    }

    @Test func aReturnAnswersTheRecallAndTakesItsTurnBehindBatchesInThePipeline() {
        var machine = SessionStateMachine(now: 0, timeouts: .init(heartbeatInterval: 1_000_000_000))
        open(&machine)
        let sent = machine.recallSent(now: 0)
        #expect(sent)
        guard case .dispatch(let ticket)? = machine.batchFrameReceived() else {
            Issue.record("batch not dispatched")
            return
        }
        #expect(machine.creditReturnReceived(readings: 7).isEmpty, "waits for the batch before it")
        machine.frameReceived(now: 3_500_000_000)
        if case .sendError? = machine.tick(now: 3_500_000_000) { Issue.record("an answered recall timed out") }
        let actions = machine.decoded(ticket: ticket, .batch(seq: 1, readings: 5))
        #expect(actions == [.submit(ticket: ticket, seq: 1, readings: 5), .returnCredit(readings: 7)])
    }

    @Test func aReturnBeforeTheSessionIsOpenIsFailedPrecondition() {
        var machine = SessionStateMachine(now: 0)
        _ = machine.prefaceReceived()
        let actions = machine.creditReturnReceived(readings: 1)
        guard case .sendError(let error, _, true)? = actions.first else {
            Issue.record("no closing error")
            return
        }
        #expect(error.code == .failedPrecondition)
    }

    func open(_ machine: inout SessionStateMachine) {
        _ = machine.prefaceReceived()
        var hello = Hello()
        hello.protocolVersion = sluiceProtocolVersion
        hello.producerID = .init(repeating: 1, count: 16)
        hello.creditReturns = true
        _ = machine.helloReceived(hello)
        _ = machine.helloAccepted()
    }
}
