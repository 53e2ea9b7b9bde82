import Testing

@testable import SluiceCore

@Suite struct FlowControllerTests {
    typealias Grant = FlowController.Grant

    func controller(
        budget: Int = 1_000, maxWindow: Int = 1_000, initialWindow: Int = 1_000_000, minimumWindow: Int = 64,
        unprovenShare: Double = 1, high: Int = 10_000, low: Int = 5_000, latency: Double = 0.5
    ) -> FlowController {
        FlowController(
            configuration: .init(
                budget: budget, maxWindow: maxWindow, initialWindow: initialWindow, minimumWindow: minimumWindow,
                unprovenShare: unprovenShare, grantFraction: 0.25, queueHighWater: high, queueLowWater: low,
                latencyTarget: latency))
    }

    @Test func firstWindowIsCappedAndDoublesAsItsBatchesCommit() {
        var flow = controller(budget: 10_000, maxWindow: 10_000, initialWindow: 1_000)
        #expect(flow.open(1) == 1_000)
        _ = flow.batchReceived(1, readings: 1_000)
        #expect(flow.finished(1, readings: 1_000) == [Grant(connection: 1, readings: 2_000)])
        _ = flow.batchReceived(1, readings: 2_000)
        #expect(flow.finished(1, readings: 2_000) == [Grant(connection: 1, readings: 4_000)])
    }

    @Test func idleEarlyConnectionsDoNotHoldTheBudgetLaterOnesNeed() {
        var flow = controller(budget: 10_000, maxWindow: 10_000, initialWindow: 500)
        for id in 1...20 as ClosedRange<UInt64> {
            #expect(flow.open(id) == 500, "connection \(id) gets a first window")
        }
        #expect(flow.outstanding == 10_000)
    }

    /// The default tuning (DESIGN §6 machine): budget 1 M, max window 256 Ki, first window 16 Ki.
    func defaultController() -> FlowController { FlowController(configuration: .init()) }

    @Test func sixtyFourConnectionsOpenedAtOnceAllStartWithCredit() {
        var flow = defaultController()
        for id in 1...64 as ClosedRange<UInt64> {
            #expect(flow.open(id) > 0, "connection \(id) starts with credit")
        }
        #expect(flow.outstanding <= 1_000_000)
        #expect(flow.outstanding <= 300_000, "most of the budget stays free for connections that use it")
    }

    @Test func sixtyFourBusyConnectionsOfOneReadingBatchesAllGrowToWhatTheyUse() {
        var flow = defaultController()
        for id in 1...64 as ClosedRange<UInt64> { _ = flow.open(id) }
        // Every connection wants to stream 500 1-reading batches per round trip; commits come back per round.
        var sentInLastRound: [UInt64: Int] = [:]
        for _ in 0..<20 {
            for id in 1...64 as ClosedRange<UInt64> {
                let n = min(flow.ledger(id)!.held, 500)
                for _ in 0..<n { _ = flow.batchReceived(id, readings: 1) }
                sentInLastRound[id] = n
                _ = flow.finished(id, readings: flow.ledger(id)!.inFlight)
            }
        }
        for id in 1...64 as ClosedRange<UInt64> {
            #expect(sentInLastRound[id] == 500, "connection \(id) is not held back by credit")
        }
        #expect(flow.outstanding <= 1_000_000)
    }

    @Test func idleConnectionHoldsOnlyItsSmallFirstWindow() {
        var flow = defaultController()
        _ = flow.open(1)
        _ = flow.open(2)  // idle for ever
        for _ in 0..<50 {
            let held = flow.ledger(1)!.held
            _ = flow.batchReceived(1, readings: held)
            _ = flow.finished(1, readings: held)
        }
        #expect(flow.ledger(2)!.outstanding <= 16_384)
        #expect(flow.ledger(1)!.outstanding == 262_144, "the busy one reached the max window")
    }

    @Test func aThousandIdleConnectionsCannotPinTheBudget() {
        var flow = defaultController()
        for id in 1...1_000 as ClosedRange<UInt64> { _ = flow.open(id) }
        #expect(flow.outstanding <= 350_000, "idle connections hold \(flow.outstanding)")
        // A hundred busy connections arriving afterwards all get credit at once, and grow.
        for id in 1_001...1_100 as ClosedRange<UInt64> {
            #expect(flow.open(id) > 0, "busy connection \(id) gets credit")
        }
        for _ in 0..<30 {
            for id in 1_001...1_100 as ClosedRange<UInt64> {
                let held = flow.ledger(id)!.held
                _ = flow.batchReceived(id, readings: held)
                _ = flow.finished(id, readings: held)
            }
        }
        #expect(flow.ledger(1_100)!.outstanding >= 900, "a busy connection reaches its fair share (909)")
        #expect(flow.outstanding <= 1_000_000)
    }

    @Test func connectionOpenedWhileCreditIsWithheldGetsItsWholeFirstWindowWhenGrantingResumes() {
        var flow = defaultController()
        _ = flow.observe(queueDepth: 700_000, commitLatencyP99: 0.01)
        #expect(flow.open(1) == 0)
        #expect(flow.observe(queueDepth: 0, commitLatencyP99: 0.01) == [Grant(connection: 1, readings: 16_384)])
    }

    @Test func sessionTakingOverABusyProducerGetsAFullFirstWindow() {
        var flow = defaultController()
        _ = flow.open(1)
        for _ in 0..<10 { _ = flow.batchReceived(1, readings: 200) }
        _ = flow.finished(1, readings: 600)
        #expect(flow.open(2) == 16_384)
        _ = flow.close(1)
        _ = flow.finished(1, readings: 1_400)
        #expect(flow.ledger(2)!.held == 16_384)
    }

    @Test func trickleProducerDoesNotGrowItsWindow() {
        var flow = defaultController()
        _ = flow.open(1)
        for _ in 0..<10_000 {
            _ = flow.batchReceived(1, readings: 1)
            _ = flow.finished(1, readings: 1)
        }
        #expect(flow.ledger(1)!.window == 16_384)
    }

    @Test func singleFastConnectionReachesTheMaxWindow() {
        var flow = defaultController()
        #expect(flow.open(1) == 16_384)
        for _ in 0..<10 {
            let held = flow.ledger(1)!.held
            _ = flow.batchReceived(1, readings: held)
            _ = flow.finished(1, readings: held)
        }
        #expect(flow.ledger(1)!.outstanding == 262_144)
    }

    @Test func firstConnectionGetsItsWholeShareInWelcome() {
        var flow = controller(budget: 1_000, maxWindow: 600)
        #expect(flow.open(1) == 600)
        #expect(flow.outstanding == 600 && flow.creditHeld == 600)
    }

    @Test func connectionOpenedWhenTheBudgetIsSpentWaitsAndIsServedFirst() {
        var flow = controller()
        #expect(flow.open(1) == 1_000)
        #expect(flow.open(2) == 0, "nothing left of the budget")
        #expect(flow.batchReceived(1, readings: 1_000) == .accepted)
        // Connection 1 is now above its share (500): what it frees goes to connection 2.
        #expect(flow.finished(1, readings: 500) == [Grant(connection: 2, readings: 500)])
        #expect(flow.finished(1, readings: 500) == [Grant(connection: 1, readings: 500)])
        #expect(flow.outstanding == 1_000)
    }

    @Test func commitGrantsWhatTheConnectionLacksOfItsShare() {
        var flow = controller()
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        #expect(flow.finished(1, readings: 300) == [Grant(connection: 1, readings: 300)])
    }

    @Test func smallDeficitIsDeferredWhileReadingsAreStillInFlight() {
        var flow = controller()
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        #expect(flow.finished(1, readings: 100).isEmpty, "100 < a quarter of the share, 900 still in flight")
        #expect(flow.finished(1, readings: 200) == [Grant(connection: 1, readings: 300)])
    }

    @Test func lastInFlightBatchFinishingGrantsAnyDeficit() {
        var flow = controller()
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 10)
        #expect(flow.finished(1, readings: 10) == [Grant(connection: 1, readings: 10)])
    }

    @Test func creditViolationIsReportedAndChangesNothing() {
        var flow = controller()
        _ = flow.open(1)
        #expect(flow.batchReceived(1, readings: 1_001) == .violation(held: 1_000, sent: 1_001))
        #expect(flow.outstanding == 1_000)
    }

    @Test func queueAboveHighWaterWithholdsCreditUntilBelowLowWater() {
        var flow = controller(high: 10_000, low: 5_000)
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        #expect(flow.observe(queueDepth: 10_001, commitLatencyP99: 0.01).isEmpty)
        #expect(flow.withholding == .queueAboveHighWater(depth: 10_001))
        #expect(flow.finished(1, readings: 1_000).isEmpty, "no grants while withheld")
        #expect(flow.observe(queueDepth: 7_000, commitLatencyP99: 0.01).isEmpty, "hysteresis: between the marks")
        #expect(flow.withholding != nil)
        #expect(flow.observe(queueDepth: 4_999, commitLatencyP99: 0.01) == [Grant(connection: 1, readings: 1_000)])
        #expect(flow.withholding == nil)
    }

    @Test func queueBetweenTheMarksDoesNotStartWithholding() {
        var flow = controller(high: 10_000, low: 5_000)
        _ = flow.open(1)
        #expect(flow.observe(queueDepth: 10_000, commitLatencyP99: 0.01).isEmpty)
        #expect(flow.withholding == nil)
    }

    @Test func slowCommitsWithholdCreditUntilLatencyRecovers() {
        var flow = controller(latency: 0.5)
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        _ = flow.observe(queueDepth: 100, commitLatencyP99: 0.8)
        #expect(flow.withholding == .commitLatencyAboveTarget(p99: 0.8))
        #expect(flow.finished(1, readings: 1_000).isEmpty)
        #expect(flow.observe(queueDepth: 100, commitLatencyP99: 0.7).isEmpty)
        #expect(flow.observe(queueDepth: 100, commitLatencyP99: 0.2) == [Grant(connection: 1, readings: 1_000)])
    }

    @Test func emptyQueueEndsWithholdingEvenWithAStaleLatencyFigure() {
        var flow = controller(latency: 0.5)
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        _ = flow.observe(queueDepth: 100, commitLatencyP99: 2)
        _ = flow.finished(1, readings: 1_000)
        #expect(flow.observe(queueDepth: 0, commitLatencyP99: 2) == [Grant(connection: 1, readings: 1_000)])
    }

    @Test func resumingServesTheLeastServedConnectionFirst() {
        var flow = controller(budget: 1_000, maxWindow: 1_000)
        _ = flow.open(1)
        _ = flow.open(2)  // waits: budget spent by 1
        _ = flow.batchReceived(1, readings: 1_000)
        _ = flow.observe(queueDepth: 20_000, commitLatencyP99: 0)
        _ = flow.finished(1, readings: 1_000)
        let grants = flow.observe(queueDepth: 0, commitLatencyP99: 0)
        #expect(grants == [Grant(connection: 2, readings: 500), Grant(connection: 1, readings: 500)])
    }

    @Test func closingReturnsHeldCreditToWaitingConnections() {
        var flow = controller()
        _ = flow.open(1)
        #expect(flow.open(2) == 0)
        #expect(flow.close(1) == [Grant(connection: 2, readings: 1_000)])
        #expect(flow.connections == 1)
    }

    @Test func readingsInFlightOfAClosedConnectionCountUntilTheyFinish() {
        var flow = controller()
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 600)
        _ = flow.close(1)
        #expect(flow.outstanding == 600)
        #expect(flow.open(2) == 400, "only what the orphaned batches leave")
        #expect(flow.finished(1, readings: 600) == [Grant(connection: 2, readings: 600)])
        #expect(flow.outstanding == 1_000)
    }

    @Test func drainingStopsAllGrants() {
        var flow = controller()
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 1_000)
        flow.stopGranting()
        #expect(flow.finished(1, readings: 1_000).isEmpty)
        #expect(flow.observe(queueDepth: 0, commitLatencyP99: 0).isEmpty)
        #expect(flow.withholding == .draining)
    }

    @Test func flatOutProducerCannotTakeASlowProducersShare() {
        var flow = controller(budget: 1_000, maxWindow: 1_000)
        _ = flow.open(1)
        _ = flow.open(2)
        // Drain the initial imbalance: 1 got everything before 2 connected.
        _ = flow.batchReceived(1, readings: 1_000)
        var granted: [UInt64: Int] = [:]
        for g in flow.finished(1, readings: 1_000) { granted[g.connection, default: 0] += g.readings }
        // The fast producer cycles its credit many times; the slow one sends nothing.
        for _ in 0..<100 {
            let held = flow.ledger(1)!.held
            guard held > 0 else { break }
            _ = flow.batchReceived(1, readings: held)
            _ = flow.finished(1, readings: held)
        }
        #expect(flow.ledger(2)!.outstanding == 500, "the slow producer keeps its fair share")
        #expect(flow.ledger(1)!.outstanding <= 500)
    }

    @Test(arguments: [1.0, 0.25])
    func budgetIsNeverExceededUnderRandomTraffic(unprovenShare: Double) {
        var rng = SplitMix64(seed: 42)
        var flow = controller(
            budget: 5_000, maxWindow: 2_000, initialWindow: 300, minimumWindow: 20, unprovenShare: unprovenShare)
        var open: [UInt64] = []
        var inFlight: [UInt64: [Int]] = [:]
        var next: UInt64 = 1
        for _ in 0..<20_000 {
            switch rng.next() % 6 {
            case 0 where open.count < 12:
                _ = flow.open(next)
                open.append(next)
                next += 1
            case 1 where !open.isEmpty && rng.next() % 10 == 0:
                let id = open.remove(at: Int(rng.next() % UInt64(open.count)))
                _ = flow.close(id)
            case 2...3 where !open.isEmpty:
                let id = open[Int(rng.next() % UInt64(open.count))]
                let held = flow.ledger(id)!.held
                if held > 0 {
                    let n = Int(rng.next() % UInt64(held)) + 1
                    #expect(flow.batchReceived(id, readings: n) == .accepted)
                    inFlight[id, default: []].append(n)
                }
            case 4:
                if let id = inFlight.keys.randomElement(using: &rng), var batches = inFlight[id], !batches.isEmpty {
                    let n = batches.removeFirst()
                    inFlight[id] = batches.isEmpty ? nil : batches
                    _ = flow.finished(id, readings: n)
                }
            default:
                _ = flow.observe(queueDepth: Int(rng.next() % 20_000), commitLatencyP99: 0.01)
            }
            #expect(flow.outstanding <= 5_000)
            let sum = open.reduce(0) { $0 + flow.ledger($1)!.outstanding }
            #expect(sum <= flow.outstanding)
        }
    }
}
