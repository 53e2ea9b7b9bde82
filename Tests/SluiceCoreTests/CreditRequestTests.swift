import Testing

@testable import SluiceCore

/// Credit requests (`CreditRequest`) and the request line: every connection holding a batch of up to
/// `max_batch_readings` readings gets the credit to send it, however many connections there are (issue 14:
/// a reconnect storm starved 183 of 200 producers for ever).
@Suite struct CreditRequestTests {
    typealias Grant = FlowController.Grant

    /// A writer that finishes batches in the order they arrived, and clients that hold what they were granted.
    struct Simulation {
        var flow: FlowController
        var held: [UInt64: Int] = [:]
        var writer: [(connection: UInt64, readings: Int)] = []
        /// Connections in the order their requests were satisfied (the grant that made held reach the need).
        var satisfied: [UInt64] = []
        var need: [UInt64: Int] = [:]
        var peakOutstanding = 0

        init(_ configuration: FlowController.Configuration = .init()) {
            flow = FlowController(configuration: configuration)
        }

        mutating func open(_ id: UInt64) {
            held[id] = flow.open(id)
            observeBudget()
        }

        mutating func deliver(_ grants: [Grant]) {
            for grant in grants {
                #expect(grant.readings > 0)
                held[grant.connection, default: 0] += grant.readings
                if let n = need[grant.connection], held[grant.connection]! >= n {
                    need[grant.connection] = nil
                    satisfied.append(grant.connection)
                }
            }
            observeBudget()
        }

        /// The client needs `readings` to send its next batch: it asks unless it holds that already.
        mutating func ask(_ id: UInt64, _ readings: Int) {
            if held[id, default: 0] >= readings {
                satisfied.append(id)
                return
            }
            need[id] = readings
            deliver(flow.request(id, readings: readings))
        }

        /// `id` sends a batch of `readings` (it must hold the credit).
        mutating func send(_ id: UInt64, _ readings: Int) {
            #expect(flow.batchReceived(id, readings: readings) == .accepted)
            held[id, default: 0] -= readings
            writer.append((id, readings))
        }

        /// The oldest batch commits.
        mutating func commitOldest() {
            let batch = writer.removeFirst()
            deliver(flow.finished(batch.connection, readings: batch.readings))
        }

        mutating func observeBudget() {
            peakOutstanding = max(peakOutstanding, flow.outstanding)
            #expect(flow.outstanding <= flow.configuration.budget, "the budget is never exceeded")
        }

        func ledgersMatch() -> Bool {
            held.allSatisfy { entry in flow.ledger(entry.key).map { $0.held == entry.value } ?? true }
        }
    }

    @Test func aThousandConnectionsEachNeedingAThousandAllGetThemAsBatchesComplete() {
        var sim = Simulation()
        let ids = Array(1...1_000 as ClosedRange<UInt64>)
        for id in ids { sim.open(id) }
        for id in ids { sim.ask(id, 1_000) }
        var sent = Set<UInt64>()
        var steps = 0
        while sent.count < ids.count {
            steps += 1
            #expect(steps < 100_000)
            if steps >= 100_000 { break }
            var progressed = false
            for id in ids where !sent.contains(id) && sim.held[id, default: 0] >= 1_000 {
                sim.send(id, 1_000)
                sent.insert(id)
                progressed = true
            }
            if !sim.writer.isEmpty {
                sim.commitOldest()
            } else if !progressed {
                Issue.record("nothing in flight and \(ids.count - sent.count) connections still short: starved")
                break
            }
        }
        #expect(sent.count == 1_000)
        #expect(sim.ledgersMatch())
    }

    @Test func tenThousandConnectionsAskingForTheMaxBatchAreServedInOrderAsBudgetFrees() {
        let maxBatch = 65_536
        var sim = Simulation()
        #expect(sim.flow.maxRequest >= maxBatch)
        let ids = Array(1...10_000 as ClosedRange<UInt64>)
        for id in ids { sim.open(id) }
        var asked: [UInt64] = []
        for id in ids where sim.held[id, default: 0] < maxBatch {
            asked.append(id)
            sim.ask(id, maxBatch)
        }
        var sent = Set<UInt64>()
        var sendOrder: [UInt64] = []
        var steps = 0
        while sent.count < ids.count, steps < 1_000_000 {
            steps += 1
            for id in sim.satisfied.dropFirst(sendOrder.count) {
                sim.send(id, maxBatch)
                sent.insert(id)
                sendOrder.append(id)
            }
            guard !sim.writer.isEmpty else { break }
            sim.commitOldest()
        }
        #expect(sent.count == ids.count, "every connection got the credit for its batch")
        #expect(sim.satisfied == asked, "in the order they asked")
        #expect(sim.peakOutstanding <= 1_000_000)
        while !sim.writer.isEmpty { sim.commitOldest() }
        #expect(sim.flow.pendingRequests == 0, "with everything committed, the line is through")
    }

    @Test func aBigRequestIsNotStarvedBySmallOnesAskingAfterIt() {
        // Budget 10,000: connection 1 needs 8,000 while 20 others keep sending small batches and asking again.
        var sim = Simulation(.init(budget: 10_000, maxWindow: 10_000, initialWindow: 400, minimumWindow: 10, unprovenShare: 1))
        for id in 1...21 as ClosedRange<UInt64> { sim.open(id) }
        #expect(sim.flow.outstanding == 8_400)
        sim.ask(1, 8_000)
        #expect(sim.satisfied.isEmpty, "not enough budget free yet")
        var bigSent = false
        for round in 0..<200 {
            for id in 2...21 as ClosedRange<UInt64> where sim.held[id, default: 0] >= 300 {
                sim.send(id, 300)
                sim.ask(id, 300)
            }
            if sim.held[1, default: 0] >= 8_000 && !bigSent {
                sim.send(1, 8_000)
                bigSent = true
                #expect(round < 10, "the big request waited \(round) rounds")
            }
            if sim.writer.isEmpty { break }
            while !sim.writer.isEmpty { sim.commitOldest() }
        }
        #expect(bigSent)
        // The small ones were served too, after it.
        for id in 2...21 as ClosedRange<UInt64> {
            #expect(sim.held[id, default: 0] >= 300 || sim.flow.pendingRequest(id) != nil)
        }
        #expect(sim.peakOutstanding <= 10_000)
    }

    @Test func withholdingPausesTheRequestLineAndResumesItInOrder() {
        var sim = Simulation(.init(budget: 10_000, maxWindow: 10_000, initialWindow: 100, minimumWindow: 10, unprovenShare: 1, queueHighWater: 1_000, queueLowWater: 500))
        for id in 1...5 as ClosedRange<UInt64> { sim.open(id) }
        #expect(sim.flow.observe(queueDepth: 2_000, commitLatencyP99: 0).isEmpty)
        #expect(sim.flow.withholding != nil)
        for id in [3, 1, 5, 2] as [UInt64] { sim.ask(id, 1_000) }
        #expect(sim.satisfied.isEmpty, "nothing is granted while withheld")
        #expect(sim.flow.pendingRequests == 4)
        #expect(sim.flow.observe(queueDepth: 800, commitLatencyP99: 0).isEmpty, "still above the low-water mark")
        sim.deliver(sim.flow.observe(queueDepth: 100, commitLatencyP99: 0))
        #expect(sim.satisfied == [3, 1, 5, 2])
        #expect(sim.flow.pendingRequests == 0)
    }

    @Test func requestsWaitInOrderWhileTheBudgetIsShortAndTheHeadIsServedWhole() {
        var sim = Simulation(.init(budget: 3_000, maxWindow: 3_000, initialWindow: 1_000, minimumWindow: 10, unprovenShare: 1))
        for id in 1...3 as ClosedRange<UInt64> { sim.open(id) }
        for id in 1...3 as ClosedRange<UInt64> { sim.send(id, 1_000) }
        #expect(sim.flow.outstanding == 3_000)
        sim.ask(1, 2_000)
        sim.ask(2, 500)
        #expect(sim.satisfied.isEmpty)
        sim.commitOldest()  // 1's batch: 1,000 free, not enough for 1's 2,000; 2 behind it waits
        #expect(sim.satisfied.isEmpty, "the budget accumulates for the head")
        #expect(sim.flow.ledger(2)!.held == 0, "nobody behind the head is granted meanwhile")
        sim.commitOldest()  // 2,000 free: the head gets it whole
        #expect(sim.satisfied == [1])
        sim.commitOldest()
        #expect(sim.satisfied == [1, 2])
        #expect(sim.ledgersMatch())
        #expect(sim.peakOutstanding <= 3_000)
    }

    @Test func newConnectionsQueueBehindTheRequestLine() {
        var sim = Simulation(.init(budget: 2_000, maxWindow: 2_000, initialWindow: 1_000, minimumWindow: 10, unprovenShare: 1))
        sim.open(1)
        sim.open(2)
        sim.send(1, 1_000)
        sim.ask(2, 2_000)
        sim.open(3)
        #expect(sim.held[3] == 0, "the first window waits behind the request")
        sim.commitOldest()
        #expect(sim.satisfied == [2])
        #expect(sim.flow.ledger(3)!.held == 0)
        sim.send(2, 2_000)
        sim.commitOldest()
        #expect(sim.held[3]! >= 10, "served once the line is through")
    }

    @Test func unprovenShareAndMinimumWindowNeverHoldARequestBack() {
        // The storm of issue 14: 200 new connections, first windows pinned at the minimum by the unproven share.
        var sim = Simulation()
        let ids = Array(1...200 as ClosedRange<UInt64>)
        for id in ids { sim.open(id) }
        #expect(ids.filter { sim.held[$0]! < 1_000 }.count > 100, "most first windows are small")
        for id in ids { sim.ask(id, 1_000) }
        #expect(Set(sim.satisfied) == Set(ids), "everyone can send their 1,000-reading batch at once")
    }

    @Test func aRequestReplacesTheEarlierOneAndIsBoundedByTheMaxRequest() {
        var flow = FlowController(configuration: .init(budget: 10_000, maxWindow: 4_000, initialWindow: 100, minimumWindow: 10, unprovenShare: 1))
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 100)
        // Budget is free: a request beyond maxWindow is granted up to it.
        #expect(flow.request(1, readings: 1_000_000) == [Grant(connection: 1, readings: 4_000)])
        #expect(flow.pendingRequest(1) == nil)
        // A request for no more than is held withdraws any earlier one.
        #expect(flow.request(1, readings: 10).isEmpty)
        #expect(flow.pendingRequests == 0)
        // Unknown connections are ignored.
        #expect(flow.request(99, readings: 10).isEmpty)
    }

    @Test func aReplacedRequestKeepsItsPlaceInLine() {
        var sim = Simulation(.init(budget: 1_000, maxWindow: 1_000, initialWindow: 500, minimumWindow: 10, unprovenShare: 1))
        sim.open(1)
        sim.open(2)
        sim.open(3)  // 0: the budget is held by 1 and 2
        sim.send(1, 500)
        sim.send(2, 500)
        sim.ask(1, 800)
        sim.ask(2, 300)
        sim.need[1] = 900
        sim.deliver(sim.flow.request(1, readings: 900))  // replaces 800, still first
        sim.commitOldest()
        sim.commitOldest()
        #expect(sim.satisfied == [1], "1 got 900 first; 2 waits for 300")
        #expect(sim.flow.ledger(1)!.held == 900)
    }

    @Test func aClientThatNeverAsksIsServedWhenItHasNothingInFlight() {
        // An old client: credit below the minimum window, nothing in flight, and others keep the line busy.
        var sim = Simulation(.init(budget: 1_000, maxWindow: 1_000, initialWindow: 500, minimumWindow: 50, unprovenShare: 1))
        sim.open(1)
        sim.open(2)
        sim.open(3)  // no budget left: 0, and it joins the request line by itself
        #expect(sim.held[3] == 0)
        #expect(sim.flow.pendingRequest(3) == 50)
        sim.send(1, 500)
        sim.ask(1, 500)  // behind 3
        sim.commitOldest()
        #expect(sim.held[3]! >= 50, "the old client is served first")
        #expect(sim.satisfied.isEmpty)
        sim.send(2, 450)
        sim.commitOldest()
        #expect(sim.satisfied == [1])
    }

    @Test func drainingDropsTheRequestLine() {
        var flow = FlowController(configuration: .init(budget: 100, maxWindow: 100, initialWindow: 100, minimumWindow: 10, unprovenShare: 1))
        _ = flow.open(1)
        _ = flow.open(2)
        #expect(flow.request(2, readings: 50).isEmpty)
        flow.stopGranting()
        #expect(flow.pendingRequests == 0)
        _ = flow.batchReceived(1, readings: 100)
        #expect(flow.finished(1, readings: 100).isEmpty)
    }

    @Test func closingAConnectionRemovesItsRequestAndServesTheNext() {
        var sim = Simulation(.init(budget: 1_000, maxWindow: 1_000, initialWindow: 400, minimumWindow: 10, unprovenShare: 1))
        sim.open(1)
        sim.open(2)
        sim.ask(1, 1_000)
        sim.ask(2, 900)
        #expect(sim.satisfied.isEmpty)
        sim.deliver(sim.flow.close(1))
        #expect(sim.satisfied == [2], "1's 400 returned to the budget and its request left the line")
        #expect(sim.flow.pendingRequests == 0)
    }

    // MARK: Zero-reading batches

    @Test func aBatchWithoutReadingsCostsOneCredit() {
        #expect(FlowController.cost(ofBatchWith: 0) == 1)
        #expect(FlowController.cost(ofBatchWith: 5) == 5)
        var flow = FlowController(configuration: .init(budget: 1, maxWindow: 1, initialWindow: 1, minimumWindow: 1, unprovenShare: 1))
        #expect(flow.open(1) == 1)
        #expect(flow.batchReceived(1, readings: 0) == .accepted)
        #expect(flow.ledger(1)!.held == 0 && flow.ledger(1)!.inFlight == 1)
        // Without credit, even an empty batch is a violation: it can never grow the writer queue.
        #expect(flow.batchReceived(1, readings: 0) == .violation(held: 0, sent: 1))
        #expect(flow.outstanding == 1)
        _ = flow.finished(1, readings: 0)
        #expect(flow.ledger(1)!.inFlight == 0)
        #expect(flow.outstanding == 1, "its one credit was granted again")
        #expect(flow.ledger(1)!.held == 1)
    }

    @Test func emptyBatchesOfAClosedConnectionFinishAtTheirCost() {
        var flow = FlowController(configuration: .init(budget: 10, maxWindow: 10, initialWindow: 10, minimumWindow: 1, unprovenShare: 1))
        _ = flow.open(1)
        _ = flow.batchReceived(1, readings: 0)
        _ = flow.batchReceived(1, readings: 0)
        _ = flow.close(1)
        #expect(flow.outstanding == 2)
        _ = flow.finished(1, readings: 0)
        _ = flow.finished(1, readings: 0)
        #expect(flow.outstanding == 0)
    }
}
