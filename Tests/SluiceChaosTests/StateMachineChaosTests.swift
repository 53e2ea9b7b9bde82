import Foundation
import SluiceCore
import SluiceProtocol
import Testing

/// Random walks over the session state machines and the flow controller together, wired the way the session
/// handler wires them, from a seeded generator: connections open and drop, batches arrive within and beyond
/// credit, the pipeline finishes them out of order (some rejected, some undecodable), the writer commits or
/// fails them, the queue and latency swing the controller into withholding and back, the server drains.
/// After every step the invariants DESIGN §2 promises are checked; a failure names the seed and the step so
/// it replays exactly.
@Suite struct StateMachineChaosTests {
    @Test(arguments: Array(UInt64(1)...UInt64(24)))
    func randomEventSequencesKeepCreditAndAckInvariants(seed: UInt64) throws {
        var world = ChaosWorld(seed: seed)
        for step in 0..<2_500 {
            world.step()
            if let violation = world.check() {
                Issue.record("seed \(seed), step \(step) (\(world.lastEvent)): \(violation)")
                return
            }
        }
        world.drainEverything()
        if let violation = world.check() ?? world.checkDrained() {
            Issue.record("seed \(seed), after draining: \(violation)")
        }
        #expect(world.stats.acks > 0, "the walk must exercise acks (seed \(seed))")
        #expect(world.stats.commits > 0)
    }

    @Test func theWalksCoverEveryKindOfEvent() {
        var total = ChaosWorld.Stats()
        for seed in UInt64(1)...UInt64(8) {
            var world = ChaosWorld(seed: seed)
            for _ in 0..<2_500 { world.step() }
            world.drainEverything()
            total.add(world.stats)
        }
        #expect(total.creditViolations > 0)
        #expect(total.rejected > 0)
        #expect(total.broken > 0)
        #expect(total.failedCommits > 0)
        #expect(total.disconnects > 0)
        #expect(total.withheld > 0)
        #expect(total.orphanedCommits > 0)
        #expect(total.drains > 0)
        #expect(total.acks > 1_000)
    }
}

/// The model: N connections sharing one flow controller and one writer, wired as `SessionHandler` wires them.
struct ChaosWorld {
    struct Stats {
        var acks = 0, commits = 0, failedCommits = 0, creditViolations = 0, rejected = 0, broken = 0
        var disconnects = 0, withheld = 0, orphanedCommits = 0, drains = 0
        mutating func add(_ o: Stats) {
            acks += o.acks; commits += o.commits; failedCommits += o.failedCommits
            creditViolations += o.creditViolations; rejected += o.rejected; broken += o.broken
            disconnects += o.disconnects; withheld += o.withheld; orphanedCommits += o.orphanedCommits
            drains += o.drains
        }
    }

    /// A batch the client sent: what it holds and whether the client had the credit for it.
    struct Sent {
        var seq: UInt64
        var readings: Int
        var withinCredit: Bool
        var outcome: SessionStateMachine.Decoded
        /// The pipeline finished it (it may still wait behind an earlier ticket).
        var done = false
    }

    struct Connection {
        var id: UInt64
        var machine: SessionStateMachine
        /// Credit as the client counts it (Welcome + Credit frames − readings sent).
        var clientHeld = 0
        /// Frames dispatched and not yet released in order (so not yet charged to the ledger), by ticket.
        var pipeline: [UInt64: Sent] = [:]
        var nextSeq: UInt64 = 1
        var open = true
        /// Seqs committed by the writer and not yet acked; seqs acked.
        var committedUnacked: Set<UInt64> = []
        var acked: [UInt64: Int] = [:]
        var errors: Set<UInt64> = []
    }

    /// One entry in the writer's queue (commits are in submission order).
    struct Write {
        var connection: UInt64
        var seq: UInt64
        var readings: Int
    }

    var rng: SplitMix64
    var flow: FlowController
    var connections: [UInt64: Connection] = [:]
    var writer: [Write] = []
    /// Readings the flow controller has charged and not yet seen finish, per connection id (open or not).
    var chargedInFlight: [UInt64: Int] = [:]
    var nextConnection: UInt64 = 1
    var now: UInt64 = 0
    var draining = false
    var steps = 0
    var stats = Stats()
    var lastEvent = "start"
    /// Invariant breaches found while performing actions (checked with the rest after the step).
    var breaches: [String] = []
    let maxBatch: Int

    init(seed: UInt64) {
        rng = SplitMix64(seed: seed)
        let budget = Int.random(in: 200...3_000, using: &rng)
        flow = FlowController(
            configuration: .init(
                budget: budget, maxWindow: max(1, budget / Int.random(in: 1...4, using: &rng)),
                queueHighWater: budget / 2, queueLowWater: budget / 4, latencyTarget: 0.5))
        maxBatch = max(1, budget / 8)
    }

    // MARK: Events

    mutating func step() {
        steps += 1
        now += UInt64.random(in: 0...50_000_000, using: &rng)
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<6 where connections.values.filter(\.open).count < 6 && !draining: connect()
        case 0..<40: sendBatch()
        case 40..<65: finishPipeline()
        case 65..<85: commit()
        case 85..<88: disconnect()
        case 88..<95: observe()
        case 95..<99: tick()
        default:
            // Drains end the walk's interesting part, so they come late: from step 2,000 on, about one step in
            // 400, so each walk has a fair chance of one and the 8 of the coverage test have several.
            if steps > 2_000 && Int.random(in: 0..<4, using: &rng) == 0 { drain() } else { sendBatch() }
        }
    }

    mutating func connect() {
        lastEvent = "connect"
        let id = nextConnection
        nextConnection += 1
        var machine = SessionStateMachine(now: now, timeouts: .init(handshake: 10_000_000_000, heartbeatInterval: 1_000_000_000_000, frameStall: 1_000_000_000_000))
        _ = machine.prefaceReceived()
        var hello = Hello()
        hello.protocolVersion = sluiceProtocolVersion
        hello.producerID = Data(repeating: UInt8(truncatingIfNeeded: id), count: 16)
        guard case .authenticate = machine.helloReceived(hello) else {
            breaches.append("a valid Hello was not sent for authentication")
            return
        }
        let initial = flow.open(id)
        guard machine.helloAccepted() == .sendWelcome else {
            breaches.append("an accepted Hello did not open the session")
            return
        }
        connections[id] = Connection(id: id, machine: machine, clientHeld: initial)
    }

    mutating func sendBatch() {
        guard let id = randomOpen(where: { $0.machine.state == .streaming }) else { return }
        var c = connections[id]!
        // Mostly honest clients; sometimes one sends more than it holds, or repeats a seq.
        let cheat = Int.random(in: 0..<50, using: &rng) == 0
        let readings: Int
        if cheat {
            readings = max(c.clientHeld, 0) + Int.random(in: 1...maxBatch, using: &rng)
        } else {
            guard c.clientHeld > 0 else { return }
            readings = Int.random(in: 1...min(c.clientHeld, maxBatch), using: &rng)
        }
        lastEvent = "send \(readings) on \(id)\(cheat ? " (beyond credit)" : "")"
        var seq = c.nextSeq
        if Int.random(in: 0..<40, using: &rng) == 0 && seq > 1 { seq -= 1 } else { c.nextSeq += 1 }
        let kind = Int.random(in: 0..<100, using: &rng)
        let outcome: SessionStateMachine.Decoded =
            kind < 4
            ? .rejected(seq: seq, readings: readings, WireError(.invalidArgument, "bad"))
            : kind < 5 ? .broken(WireError(.protocolError, "undecodable")) : .batch(seq: seq, readings: readings)
        c.clientHeld -= readings
        c.machine.frameReceived(now: now)
        guard let action = c.machine.batchFrameReceived() else { return }
        guard case .dispatch(let ticket) = action else {
            breaches.append("a batch on a streaming session was not dispatched: \(action)")
            return
        }
        c.pipeline[ticket] = Sent(seq: seq, readings: readings, withinCredit: !cheat, outcome: outcome)
        connections[id] = c
    }

    mutating func finishPipeline() {
        guard let id = randomOpen(where: { $0.pipeline.values.contains { !$0.done } }) else { return }
        let tickets = connections[id]!.pipeline.filter { !$0.value.done }.keys.sorted()
        let ticket = tickets[Int.random(in: 0..<tickets.count, using: &rng)]
        lastEvent = "pipeline finished ticket \(ticket) on \(id)"
        connections[id]!.pipeline[ticket]!.done = true
        let sent = connections[id]!.pipeline[ticket]!
        if case .broken = sent.outcome { stats.broken += 1 }
        let actions = connections[id]!.machine.decoded(ticket: ticket, sent.outcome)
        let frames = connections[id]!.pipeline
        perform(actions, on: id, sentByTicket: { frames[$0] })
    }

    mutating func commit() {
        guard !writer.isEmpty else { return }
        // One writer: commits happen in submission order (per producer that is the contract).
        let w = writer.removeFirst()
        let fails = Int.random(in: 0..<30, using: &rng) == 0
        lastEvent = "commit seq \(w.seq) of \(w.connection)\(fails ? " (failed)" : "")"
        stats.commits += 1
        if fails { stats.failedCommits += 1 }
        // As in SessionHandler: free the budget first, then hop to the session for the ack.
        chargedInFlight[w.connection, default: 0] -= w.readings
        deliver(flow.finished(w.connection, readings: w.readings))
        guard var c = connections[w.connection] else { return }
        if !c.open { stats.orphanedCommits += 1 }
        if !fails { c.committedUnacked.insert(w.seq) }
        connections[w.connection] = c
        guard c.open else { return }
        let actions = connections[w.connection]!.machine.committed(
            seq: w.seq, fails ? .failed("disk on fire") : .committed(accepted: w.readings, rejected: 0))
        perform(actions, on: w.connection, sentByTicket: { _ in nil })
    }

    mutating func disconnect() {
        guard let id = randomOpen(where: { _ in true }) else { return }
        lastEvent = "disconnect \(id)"
        stats.disconnects += 1
        close(id)
    }

    mutating func observe() {
        let depth = writer.reduce(0) { $0 + $1.readings }
        let latency = Int.random(in: 0..<6, using: &rng) == 0 ? 2.0 : 0.01
        lastEvent = "observe depth \(depth) latency \(latency)"
        let grants = flow.observe(queueDepth: depth, commitLatencyP99: latency)
        if flow.withholding != nil { stats.withheld += 1 }
        deliver(grants)
    }

    mutating func tick() {
        guard let id = randomOpen(where: { _ in true }) else { return }
        lastEvent = "tick \(id)"
        connections[id]!.machine.frameReceived(now: now)
        if let action = connections[id]!.machine.tick(now: now) {
            perform([action], on: id, sentByTicket: { _ in nil })
        }
    }

    mutating func drain() {
        guard !draining else { return }
        lastEvent = "drain"
        draining = true
        stats.drains += 1
        flow.stopGranting()
        for id in connections.keys.sorted() where connections[id]!.open {
            if let action = connections[id]!.machine.shutdownRequested() {
                perform([action], on: id, sentByTicket: { _ in nil })
            }
        }
    }

    /// Finishes every frame in the pipeline and every write, in order, so the end state can be checked.
    mutating func drainEverything() {
        var guardSteps = 0
        while guardSteps < 100_000 {
            guardSteps += 1
            if connections.values.contains(where: { $0.open && $0.pipeline.values.contains { !$0.done } }) {
                finishPipeline()
            } else if !writer.isEmpty {
                commit()
            } else {
                break
            }
        }
    }

    // MARK: Performing actions (as SessionHandler does)

    mutating func perform(
        _ actions: [SessionStateMachine.Action], on id: UInt64, sentByTicket: (UInt64) -> Sent?
    ) {
        for action in actions {
            guard connections[id]?.open == true else { return }
            switch action {
            case .submit(let ticket, let seq, let readings):
                let sent = sentByTicket(ticket)
                connections[id]!.pipeline[ticket] = nil
                switch flow.batchReceived(id, readings: readings) {
                case .violation:
                    stats.creditViolations += 1
                    if sent?.withinCredit == true {
                        breaches.append("batch \(seq) was within the client's credit but was called a violation")
                    }
                    if let a = connections[id]!.machine.creditViolation(seq: seq, held: 0, sent: readings) {
                        perform([a], on: id, sentByTicket: sentByTicket)
                    }
                case .accepted:
                    // A batch beyond what the client held when it sent it can still fit: Credit the client had
                    // not read yet counts. The ledger equality in `check` covers that case exactly.
                    chargedInFlight[id, default: 0] += readings
                    writer.append(Write(connection: id, seq: seq, readings: readings))
                }
            case .reject(let ticket, let seq, let readings, _):
                let sent = sentByTicket(ticket)
                connections[id]!.pipeline[ticket] = nil
                stats.rejected += 1
                switch flow.batchReceived(id, readings: readings) {
                case .violation:
                    stats.creditViolations += 1
                    if sent?.withinCredit == true {
                        breaches.append("rejected batch \(seq) was within credit but was called a violation")
                    }
                    if let a = connections[id]!.machine.creditViolation(seq: seq, held: 0, sent: readings) {
                        perform([a], on: id, sentByTicket: sentByTicket)
                    }
                case .accepted:
                    deliver(flow.finished(id, readings: readings))
                    connections[id]?.errors.insert(seq)
                }
            case .sendAck(let seq, _):
                stats.acks += 1
                var c = connections[id]!
                if !c.committedUnacked.contains(seq) {
                    breaches.append("ack of seq \(seq) on \(id) before its commit (or acked twice)")
                }
                c.committedUnacked.remove(seq)
                c.acked[seq, default: 0] += 1
                connections[id] = c
            case .sendError(_, let seq, let closing):
                if !closing { connections[id]!.errors.insert(seq) }
                if closing { close(id) }
            case .sendGoAway(_, let closing):
                if closing { close(id) }
            case .close:
                close(id)
            case .dispatch, .authenticate, .sendWelcome, .sendPong, .sendPing, .requestCredit, .returnCredit:
                break
            }
        }
    }

    mutating func close(_ id: UInt64) {
        guard var c = connections[id], c.open else { return }
        c.open = false
        c.machine.channelClosed()
        // Frames still in the pipeline are dropped with the connection (never charged).
        c.pipeline = [:]
        connections[id] = c
        deliver(flow.close(id))
    }

    mutating func deliver(_ grants: [FlowController.Grant]) {
        for g in grants {
            if g.readings <= 0 { breaches.append("a grant of \(g.readings) readings to \(g.connection)") }
            // SessionHandler.creditGranted sends Credit only while streaming.
            if connections[g.connection]?.open == true, connections[g.connection]!.machine.state == .streaming {
                connections[g.connection]!.clientHeld += g.readings
            }
        }
    }

    private mutating func randomOpen(where predicate: (Connection) -> Bool) -> UInt64? {
        let ids = connections.keys.sorted().filter { connections[$0]!.open && predicate(connections[$0]!) }
        guard !ids.isEmpty else { return nil }
        return ids[Int.random(in: 0..<ids.count, using: &rng)]
    }

    // MARK: Invariants

    mutating func check() -> String? {
        if let breach = breaches.first { return breach }
        let budget = flow.configuration.budget
        if flow.outstanding > budget { return "\(flow.outstanding) readings in flight, above the budget \(budget)" }
        if flow.outstanding < 0 { return "negative in-flight count \(flow.outstanding)" }
        var expected = 0
        for (id, c) in connections {
            let charged = chargedInFlight[id, default: 0]
            if charged < 0 { return "connection \(id) finished more readings than it sent" }
            expected += charged
            guard c.open else { continue }
            guard let ledger = flow.ledger(id) else { return "open connection \(id) has no ledger" }
            if ledger.held < 0 || ledger.inFlight < 0 { return "negative credit on \(id): \(ledger)" }
            if ledger.inFlight != charged { return "ledger of \(id) has \(ledger.inFlight) in flight, the model \(charged)" }
            expected += ledger.held
            if c.machine.state == .streaming {
                // What the client believes it holds, plus what it sent that is not yet charged, is the ledger's.
                let pending = c.pipeline.values.reduce(0) { $0 + $1.readings }
                if c.clientHeld + pending != ledger.held {
                    return "client \(id) holds \(c.clientHeld) + \(pending) pending, the ledger says \(ledger.held)"
                }
            }
            if c.acked.values.contains(where: { $0 > 1 }) { return "a batch on \(id) was acked twice" }
        }
        for (id, charged) in chargedInFlight where connections[id] == nil && charged != 0 {
            return "unknown connection \(id) has \(charged) in flight"
        }
        if flow.outstanding != expected {
            return "flow controller counts \(flow.outstanding) in flight, the model \(expected)"
        }
        return nil
    }

    /// After everything finished: every committed batch of an open connection was acked exactly once.
    func checkDrained() -> String? {
        for (id, c) in connections where c.open {
            if !c.committedUnacked.isEmpty { return "connection \(id): committed but never acked: \(c.committedUnacked.sorted())" }
            if c.machine.outstanding != 0 { return "connection \(id) still has \(c.machine.outstanding) outstanding" }
        }
        if flow.outstanding != connections.values.filter(\.open).reduce(0, { $0 + (flow.ledger($1.id)?.held ?? 0) }) {
            return "after draining, in-flight readings remain: \(flow.outstanding)"
        }
        return nil
    }
}
