import Foundation
import SluiceCore
import Testing

/// A seeded, deterministic simulation of the whole delivery path (DESIGN §2), checked after every step:
///
/// - clients that keep every unacked batch, resend them in seq order after a reconnect, drop those at or below
///   `Welcome.committed_seq`, and send only within the credit they hold; current ones (`credit_returns`) ask
///   for the credit a batch needs (`CreditRequest`, batches up to the largest request) and give back what they
///   hold when the server recalls it, also once they are done and sit idle; older ones do neither (batches
///   that fit `minimumWindow`) and close their connection when done;
/// - sessions: connect, replace (a producer's new session closes its old one, which the client may not have
///   noticed: a half-open connection), disconnect; frames to the client are delivered in order and lost when
///   the connection goes;
/// - the real `FlowController` (credit) and `Resequencer` (the pipeline finishing batches out of order);
/// - the writer's outcomes: commit; PostgreSQL refusing individual rows (dead-lettered with their reason, the
///   rest committed in the same transaction); a read-only / lock stall (nothing written, retried later, credit
///   withheld); the connection lost during COMMIT (committed or not: the retry finds out).
///
/// The writer pool is not a pure type (libpq on its own threads), so `SimWriter` models the rule it must follow
/// (DESIGN §2 and issue 14): a producer's batches are resolved strictly in seq order; a batch is never failed
/// and skipped; rows refused for their data are isolated and dead-lettered; errors that are not about the data
/// stall the batch and it is retried; a retry after a lost COMMIT reply that finds the batch committed acks it
/// with its original counts. `failAndSkip` plays today's writer (a failed batch is dropped and the next seq
/// commits) to prove the checks catch it.
///
/// Invariants after every step: no producer's seq N+1 commits before seq N is resolved (every reading of N in
/// `readings` or `dead_letters`); no reading is stored twice or in both tables; every ack's counts equal what
/// is stored for that producer and seq; the flow controller's outstanding readings never exceed the budget, and
/// the credit a client holds plus the credit on its way equals its ledger's. At the end of a schedule every
/// producer must finish (all its batches acked or settled by `committed_seq`) within a bounded number of quiet
/// steps. A failure prints its seed; `SLUICE_SIM_SEED=N` replays just that one.
@Suite struct DeliverySimulationTests {
    @Test func seededSchedulesKeepEveryReadingExactlyOnceAndEveryAckTrue() {
        let environment = ProcessInfo.processInfo.environment
        let seeds: [UInt64] =
            environment["SLUICE_SIM_SEED"].flatMap(UInt64.init).map { [$0] }
            ?? Array(1...UInt64(environment["SLUICE_SIM_SCHEDULES"].flatMap(Int.init) ?? 4_000))
        let clock = ContinuousClock()
        let began = clock.now
        var total = SimStats()
        for seed in seeds {
            var sim = DeliverySimulation(seed: seed, writer: .correct)
            if let failure = sim.run() {
                Issue.record("delivery simulation seed \(seed): \(failure) (replay: SLUICE_SIM_SEED=\(seed))")
                return
            }
            total.add(sim.stats)
        }
        let took = clock.now - began
        print("chaos: delivery simulation: \(seeds.count) schedules, \(total.steps) steps in \(took): \(total)")
        if seeds.count >= 100 {
            #expect(total.refusedRows > 0 && total.stalls > 0 && total.lostCommitReplies > 0 && total.lostReplyCommitted > 0)
            #expect(total.replaces > 0 && total.disconnects > 0 && total.duplicates > 0 && total.settledByWelcome > 0)
            #expect(total.withheld > 0 && total.lostAcks > 0 && total.outOfOrderFinishes > 0)
            #expect(total.requests > 0 && total.recalls > 0 && total.returnedReadings > 0)
        }
    }

    /// The checks are worth something only if they catch today's writer: a batch that fails is dropped and
    /// the producer's next seq commits over it.
    @Test func theChecksCatchAWriterThatFailsAndSkips() {
        var caught = 0
        var example = ""
        for seed in UInt64(1)...200 {
            var sim = DeliverySimulation(seed: seed, writer: .failAndSkip)
            if let failure = sim.run() {
                caught += 1
                if example.isEmpty { example = "seed \(seed): \(failure)" }
            }
        }
        print("chaos: delivery simulation with a fail-and-skip writer: \(caught) of 200 schedules caught, e.g. \(example)")
        #expect(caught > 20, "a writer that fails and skips batches must be caught")
    }
}

struct SimStats: CustomStringConvertible {
    var steps = 0, commits = 0, refusedRows = 0, stalls = 0, lostCommitReplies = 0, lostReplyCommitted = 0
    var replaces = 0, disconnects = 0, duplicates = 0, settledByWelcome = 0, withheld = 0, lostAcks = 0
    var outOfOrderFinishes = 0, acks = 0, requests = 0, recalls = 0, returnedReadings = 0
    mutating func add(_ o: SimStats) {
        requests += o.requests; recalls += o.recalls; returnedReadings += o.returnedReadings
        steps += o.steps; commits += o.commits; refusedRows += o.refusedRows; stalls += o.stalls
        lostCommitReplies += o.lostCommitReplies; lostReplyCommitted += o.lostReplyCommitted; replaces += o.replaces
        disconnects += o.disconnects; duplicates += o.duplicates; settledByWelcome += o.settledByWelcome
        withheld += o.withheld; lostAcks += o.lostAcks; outOfOrderFinishes += o.outOfOrderFinishes; acks += o.acks
    }
    var description: String {
        "\(commits) commits, \(acks) acks, \(refusedRows) rows refused, \(stalls) stalls, \(lostCommitReplies) lost COMMIT replies (\(lostReplyCommitted) committed), \(replaces) replaced sessions, \(disconnects) disconnects, \(duplicates) duplicates, \(settledByWelcome) settled by committed_seq, \(lostAcks) acks lost, \(withheld) withholdings, \(outOfOrderFinishes) out-of-order finishes, \(requests) credit requests, \(recalls) recalls (\(returnedReadings) readings given back)"
    }
}

struct DeliverySimulation {
    enum WriterMode { case correct, failAndSkip }

    struct SimBatch {
        var producer: Int
        var seq: UInt64
        var count: Int
        /// Indexes PostgreSQL refuses while a refusal (a CHECK constraint, a trigger) is in place.
        var refusable: Set<Int>
    }

    enum Frame {
        case welcome(credit: Int, committed: UInt64)
        case credit(Int)
        case recall(Int)
        case ack(seq: UInt64, accepted: Int, rejected: Int, duplicate: Bool)
    }

    struct Client {
        var producer: Int
        var total: Int
        /// Speaks `CreditRequest` and answers `CreditRecall` (`Hello.credit_returns`).
        var modern: Bool
        var generated = 0
        /// The credit asked for on this connection and not granted yet.
        var requested: Int?
        var unacked: [SimBatch] = []
        var connection: UInt64?
        var welcomed = false
        var held = 0
        /// Seqs sent on the current connection.
        var sent: Set<UInt64> = []
        var done: Bool { generated == total && unacked.isEmpty }
    }

    struct Job {
        var connection: UInt64
        var batch: SimBatch
        /// The COMMIT's reply was lost: the retry must find out whether it committed.
        var replyLost = false
    }

    struct ServerConnection {
        var producer: Int
        var open = true
        var resequencer = Resequencer<Job>()
        var decoding: [(ticket: UInt64, job: Job)] = []
        var outbox: [Frame] = []
    }

    struct Outcome { var accepted: Int; var rejected: Int }

    var rng: SplitMix64
    let writerMode: WriterMode
    var flow: FlowController
    let budget: Int
    /// The largest batch of an older client (it fits `minimumWindow`, which such a client is always served)
    /// and of a current one (it asks for what it needs).
    let maxBatch: Int
    let maxModernBatch: Int
    var clients: [Client]
    var connections: [UInt64: ServerConnection] = [:]
    var live: [Int: UInt64] = [:]
    var nextConnection: UInt64 = 1
    /// The writer's queue per producer (a producer's batches are written in the order released).
    var queues: [[Job]]
    // The database.
    var committed: [UInt64]
    var outcomes: [[UInt64: Outcome]]
    /// Readings in each batch a client generated, by producer and seq.
    var sentCounts: [[UInt64: Int]]
    var readings: [Int: [UInt64: Set<Int>]] = [:]
    var deadLetters: [Int: [UInt64: Set<Int>]] = [:]
    var refusing = false
    var stalled = false
    var stats = SimStats()
    var failure: String?
    var event = "start"

    init(seed: UInt64, writer: WriterMode) {
        rng = SplitMix64(seed: seed)
        writerMode = writer
        budget = Int.random(in: 300...3_000, using: &rng)
        flow = FlowController(
            configuration: .init(
                budget: budget, maxWindow: max(64, budget / Int.random(in: 1...3, using: &rng)),
                initialWindow: Int.random(in: 64...512, using: &rng), minimumWindow: 64,
                queueHighWater: budget / 2, queueLowWater: budget / 4))
        maxBatch = 64
        maxModernBatch = min(flow.maxRequest, 4 * maxBatch)
        let producers = Int.random(in: 1...5, using: &rng)
        var list: [Client] = []
        for p in 0..<producers {
            list.append(
                Client(producer: p, total: Int.random(in: 3...14, using: &rng), modern: Int.random(in: 0..<3, using: &rng) > 0))
        }
        clients = list
        queues = Array(repeating: [], count: producers)
        committed = Array(repeating: 0, count: producers)
        outcomes = Array(repeating: [:], count: producers)
        sentCounts = Array(repeating: [:], count: producers)
    }

    mutating func fail(_ message: String) {
        if failure == nil { failure = "step \(stats.steps) (\(event)): \(message)" }
    }

    mutating func run() -> String? {
        let steps = Int.random(in: 150...600, using: &rng)
        for _ in 0..<steps {
            step()
            check()
            if let failure { return failure }
        }
        // Quiet: no new faults; every producer must finish within a bounded number of steps.
        stalled = false
        grant(flow.observe(queueDepth: 0, commitLatencyP99: 0))
        var quiet = 0
        while !clients.allSatisfy(\.done) {
            quiet += 1
            if quiet > 5_000 {
                let waiting = clients.filter { !$0.done }.map {
                    "producer \($0.producer): unacked \($0.unacked.map { "\($0.seq)×\($0.count)" }), holds \($0.held), connection \($0.connection.map(String.init) ?? "none")"
                        + ", server ledger \($0.connection.flatMap { flow.ledger($0) }.map { "held \($0.held) in flight \($0.inFlight) window \($0.window)" } ?? "none")"
                        + ", request \($0.connection.flatMap { flow.pendingRequest($0) }.map(String.init) ?? "none")"
                        + ", outstanding \(flow.outstanding) of \(budget), withholding \(String(describing: flow.withholding))"
                        + ", holders \(connections.keys.sorted().compactMap { id in flow.ledger(id).map { "\(id)(p\(connections[id]!.producer) \(connections[id]!.open ? "open" : "closed"), client on \(clients[connections[id]!.producer].connection.map(String.init) ?? "none") done \(clients[connections[id]!.producer].done)): held \($0.held) in flight \($0.inFlight)" } })"
                }
                fail("a producer waits for ever: \(waiting.joined(separator: "; "))")
                return failure
            }
            quietStep()
            check()
            if let failure { return failure }
        }
        return finalCheck()
    }

    // MARK: Steps

    mutating func step() {
        stats.steps += 1
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<6: connect(clientIndex: Int.random(in: 0..<clients.count, using: &rng))
        case 6..<8: disconnect(halfOpen: Bool.random(using: &rng))
        case 8..<30: clientSends(Int.random(in: 0..<clients.count, using: &rng))
        case 30..<55: deliver()
        case 55..<70: finishDecoding()
        case 70..<92: write(outcomeRoll: Int.random(in: 0..<100, using: &rng))
        case 92..<95:
            refusing.toggle()
            event = refusing ? "refusal added" : "refusal dropped"
        default:
            if stalled {
                stalled = false
                event = "database writable again"
                grant(flow.observe(queueDepth: 0, commitLatencyP99: 0))
            } else {
                event = "queue observed"
                grant(flow.observe(queueDepth: queuedReadings(), commitLatencyP99: 0.01))
            }
        }
    }

    /// Everything works: connect whoever is not connected, deliver, decode, commit, send.
    mutating func quietStep() {
        stats.steps += 1
        // An older client with nothing left to send closes its connection, as `sluice send` does at the end of
        // its input: the credit it holds cannot be recalled, so staying connected it could pin the budget a
        // waiting request needs (seed 2841 found three such producers holding all 311 of it). A current one
        // stays connected and idle: what it holds comes back when recalled.
        for i in clients.indices where clients[i].done && !clients[i].modern {
            if let id = clients[i].connection {
                clients[i].connection = nil
                closeServerSide(id)
            }
        }
        // The server notices a half-open connection within 3 heartbeat intervals and closes it.
        for id in connections.keys.sorted() where connections[id]!.open {
            let p = connections[id]!.producer
            if clients[p].connection != id { closeServerSide(id) }
        }
        for i in clients.indices where !clients[i].done && clients[i].connection == nil { connect(clientIndex: i) }
        for _ in 0..<4 { deliver() }
        finishDecoding()
        write(outcomeRoll: 0)
        for i in clients.indices { clientSends(i) }
        if flow.withholding != nil { grant(flow.observe(queueDepth: 0, commitLatencyP99: 0)) }
    }

    func queuedReadings() -> Int { queues.reduce(0) { $0 + $1.reduce(0) { $0 + $1.batch.count } } }

    mutating func grant(_ grants: [FlowController.Grant]) {
        for g in grants {
            guard connections[g.connection]?.open == true else {
                fail("credit granted to closed connection \(g.connection)")
                continue
            }
            connections[g.connection]!.outbox.append(.credit(g.readings))
        }
        for r in flow.takeRecalls() {
            guard connections[r.connection]?.open == true else {
                fail("credit recalled from closed connection \(r.connection)")
                continue
            }
            guard clients[connections[r.connection]!.producer].modern else {
                fail("credit recalled from a client that does not answer recalls")
                continue
            }
            stats.recalls += 1
            connections[r.connection]!.outbox.append(.recall(r.readings))
        }
    }

    mutating func closeServerSide(_ id: UInt64) {
        guard connections[id]?.open == true else { return }
        connections[id]!.open = false
        connections[id]!.outbox = []
        let producer = connections[id]!.producer
        if live[producer] == id { live[producer] = nil }
        grant(flow.close(id))
    }

    mutating func connect(clientIndex i: Int) {
        guard !clients[i].done else { return }
        let p = clients[i].producer
        event = "producer \(p) connects"
        // The client gives up its old connection (the server may not have noticed: half-open).
        clients[i].connection = nil
        if let old = live[p] {
            stats.replaces += 1
            closeServerSide(old)  // GoAway to a client that is gone
        }
        let id = nextConnection
        nextConnection += 1
        connections[id] = ServerConnection(producer: p)
        live[p] = id
        let credit = flow.open(id, returnsCredit: clients[i].modern)
        connections[id]!.outbox.append(.welcome(credit: credit, committed: committed[p]))
        clients[i].connection = id
        clients[i].welcomed = false
        clients[i].held = 0
        clients[i].requested = nil
        clients[i].sent = []
    }

    mutating func disconnect(halfOpen: Bool) {
        let connected = clients.indices.filter { clients[$0].connection != nil }
        guard !connected.isEmpty else { return }
        let i = connected[Int.random(in: 0..<connected.count, using: &rng)]
        let id = clients[i].connection!
        event = "producer \(clients[i].producer) disconnects\(halfOpen ? " (half-open)" : "")"
        stats.disconnects += 1
        if connections[id]!.outbox.contains(where: { if case .ack = $0 { true } else { false } }) { stats.lostAcks += 1 }
        clients[i].connection = nil
        if !halfOpen { closeServerSide(id) }
    }

    mutating func clientSends(_ i: Int) {
        var c = clients[i]
        if c.unacked.count < 4 && c.generated < c.total {
            c.generated += 1
            let count = Int.random(in: 1...(c.modern ? maxModernBatch : maxBatch), using: &rng)
            var refusable = Set<Int>()
            if Int.random(in: 0..<3, using: &rng) == 0 {
                for _ in 0..<Int.random(in: 1...3, using: &rng) { refusable.insert(Int.random(in: 0..<count, using: &rng)) }
            }
            sentCounts[c.producer][UInt64(c.generated)] = count
            c.unacked.append(SimBatch(producer: c.producer, seq: UInt64(c.generated), count: count, refusable: refusable))
        }
        clients[i] = c
        guard let id = c.connection, c.welcomed, let next = c.unacked.first(where: { !c.sent.contains($0.seq) }) else { return }
        if c.held < next.count {
            // A current client says what its next batch needs, once per need.
            guard c.modern, c.requested != next.count, connections[id]!.open else { return }
            event = "producer \(c.producer) asks for \(next.count) on \(id)"
            stats.requests += 1
            clients[i].requested = next.count
            grant(flow.request(id, readings: next.count))
            return
        }
        clients[i].requested = nil
        event = "producer \(c.producer) sends seq \(next.seq) (\(next.count)) on \(id)"
        clients[i].held -= next.count
        clients[i].sent.insert(next.seq)
        guard connections[id]!.open else { return }  // half-open: the bytes go nowhere
        switch flow.batchReceived(id, readings: next.count) {
        case .violation(let held, let sent):
            fail("a batch sent within the client's credit was a violation (held \(held), sent \(sent))")
        case .accepted:
            let ticket = connections[id]!.resequencer.take()
            connections[id]!.decoding.append((ticket, Job(connection: id, batch: next)))
        }
    }

    mutating func deliver() {
        let candidates = clients.indices.filter { i in clients[i].connection.map { !(connections[$0]?.outbox.isEmpty ?? true) } ?? false }
        guard !candidates.isEmpty else { return }
        let i = candidates[Int.random(in: 0..<candidates.count, using: &rng)]
        let id = clients[i].connection!
        let frame = connections[id]!.outbox.removeFirst()
        let p = clients[i].producer
        switch frame {
        case .welcome(let credit, let committedSeq):
            event = "producer \(p) welcomed (credit \(credit), committed \(committedSeq))"
            clients[i].welcomed = true
            clients[i].held += credit
            let settled = clients[i].unacked.filter { $0.seq <= committedSeq }
            for b in settled {
                stats.settledByWelcome += 1
                // The client reports what the server knows of it: it must be stored in full.
                if stored(p, b.seq) != b.count { fail("seq \(b.seq) settled by committed_seq \(committedSeq) but only \(stored(p, b.seq)) of \(b.count) readings are stored") }
            }
            clients[i].unacked.removeAll { $0.seq <= committedSeq }
        case .credit(let n):
            event = "producer \(p) credit \(n)"
            clients[i].held += n
        case .recall(let n):
            // Give back what is held now, at most what was recalled; ask again for the next batch.
            let given = min(n, clients[i].held)
            event = "producer \(p) recalled \(n), gives back \(given)"
            clients[i].held -= given
            clients[i].requested = nil
            stats.returnedReadings += given
            switch flow.returned(id, readings: given) {
            case .violation(let held, let returned):
                fail("a client gave back \(returned) of the \(clients[i].held + given) it held and its ledger says \(held)")
            case .accepted(let grants):
                grant(grants)
            }
        case .ack(let seq, let accepted, let rejected, let duplicate):
            event = "producer \(p) ack seq \(seq)\(duplicate ? " (duplicate)" : "")"
            stats.acks += 1
            let inReadings = readings[p]?[seq]?.count ?? 0
            let inDead = deadLetters[p]?[seq]?.count ?? 0
            if accepted != inReadings || rejected != inDead {
                fail("ack of seq \(seq) says \(accepted) accepted + \(rejected) rejected, stored \(inReadings) + \(inDead) dead letters")
            }
            clients[i].unacked.removeAll { $0.seq == seq }
        }
    }

    mutating func finishDecoding() {
        let busy = connections.keys.sorted().filter { !connections[$0]!.decoding.isEmpty }
        guard !busy.isEmpty else { return }
        let id = busy[Int.random(in: 0..<busy.count, using: &rng)]
        let k = Int.random(in: 0..<connections[id]!.decoding.count, using: &rng)
        if k != 0 { stats.outOfOrderFinishes += 1 }
        let (ticket, job) = connections[id]!.decoding.remove(at: k)
        event = "decoded seq \(job.batch.seq) of connection \(id)"
        for released in connections[id]!.resequencer.finish(ticket, job) {
            queues[released.item.batch.producer].append(released.item)
        }
    }

    func stored(_ p: Int, _ seq: UInt64) -> Int { (readings[p]?[seq]?.count ?? 0) + (deadLetters[p]?[seq]?.count ?? 0) }

    /// The transaction that writes `job` (its refused rows dead-lettered) and advances the high-water.
    mutating func commit(_ job: Job) -> Outcome {
        let b = job.batch
        let refused = refusing ? b.refusable : []
        for i in 0..<b.count {
            if refused.contains(i) {
                if deadLetters[b.producer, default: [:]][b.seq, default: []].insert(i).inserted == false { fail("reading \(i) of seq \(b.seq) dead-lettered twice") }
            } else if readings[b.producer, default: [:]][b.seq, default: []].insert(i).inserted == false {
                fail("reading \(i) of seq \(b.seq) written twice")
            }
        }
        if b.seq > 1 && (stored(b.producer, b.seq - 1) != sentCounts[b.producer][b.seq - 1] || outcomes[b.producer][b.seq - 1] == nil) {
            fail("seq \(b.seq) of producer \(b.producer) committed while seq \(b.seq - 1) is unresolved")
        }
        stats.refusedRows += refused.count
        stats.commits += 1
        committed[b.producer] = b.seq
        let outcome = Outcome(accepted: b.count - refused.count, rejected: refused.count)
        outcomes[b.producer][b.seq] = outcome
        return outcome
    }

    mutating func finish(_ job: Job, _ outcome: Outcome?, duplicate: Bool) {
        queues[job.batch.producer].removeFirst()
        grant(flow.finished(job.connection, readings: job.batch.count))
        if let outcome, connections[job.connection]!.open {
            connections[job.connection]!.outbox.append(
                .ack(seq: job.batch.seq, accepted: outcome.accepted, rejected: outcome.rejected, duplicate: duplicate))
        }
    }

    mutating func write(outcomeRoll: Int) {
        guard !stalled else { return }
        let ready = queues.indices.filter { !queues[$0].isEmpty }
        guard !ready.isEmpty else { return }
        let p = ready[Int.random(in: 0..<ready.count, using: &rng)]
        let job = queues[p][0]
        let seq = job.batch.seq
        event = "writer: producer \(p) seq \(seq) from connection \(job.connection)"
        if seq <= committed[p] {
            if job.replyLost {
                // Our own COMMIT went through before its reply was lost: an accepted batch, not a duplicate.
                stats.lostReplyCommitted += 1
                finish(job, outcomes[p][seq], duplicate: false)
            } else {
                stats.duplicates += 1
                finish(job, outcomes[p][seq], duplicate: true)
            }
            return
        }
        if seq != committed[p] + 1 {
            fail("writer got seq \(seq) of producer \(p) while its high-water is \(committed[p]) (an earlier seq is unresolved)")
            return
        }
        switch outcomeRoll {
        case 75..<85:
            // Read-only (25006), a lock timeout, an admin shutdown: nothing written; stall and retry later,
            // credit withheld meanwhile.
            stats.stalls += 1
            if writerMode == .failAndSkip {
                event += " fails (read-only) and is skipped"
                finish(job, nil, duplicate: false)
                return
            }
            stalled = true
            event += " stalls"
            if flow.withholding == nil {
                stats.withheld += 1
                grant(flow.observe(queueDepth: flow.configuration.queueHighWater + 1, commitLatencyP99: 0))
            }
        case 85..<95:
            // The connection dropped during COMMIT: it may or may not have committed.
            stats.lostCommitReplies += 1
            if Bool.random(using: &rng) {
                _ = commit(job)
                event += " commits, reply lost"
            } else {
                event += " lost before COMMIT"
            }
            queues[p][0].replyLost = true
        default:
            if writerMode == .failAndSkip && refusing && !job.batch.refusable.isEmpty {
                event += " refused whole and skipped"
                finish(job, nil, duplicate: false)
                return
            }
            let outcome = commit(job)
            event += " commits"
            finish(job, outcome, duplicate: false)
        }
    }

    // MARK: Checks

    mutating func check() {
        if flow.outstanding > budget { fail("outstanding \(flow.outstanding) above the budget \(budget)") }
        for c in clients {
            guard let id = c.connection, let conn = connections[id], conn.open, let ledger = flow.ledger(id) else { continue }
            var onTheWay = 0
            for frame in conn.outbox {
                switch frame {
                case .welcome(let credit, _): onTheWay += credit
                case .credit(let n): onTheWay += n
                case .ack, .recall: break
                }
            }
            if c.held + onTheWay != ledger.held {
                fail("producer \(c.producer) holds \(c.held) + \(onTheWay) on the way, its ledger \(ledger.held)")
            }
            if c.held < 0 { fail("producer \(c.producer) holds negative credit \(c.held)") }
        }
        for (p, bySeq) in deadLetters {
            for (seq, set) in bySeq where !(readings[p]?[seq]?.isDisjoint(with: set) ?? true) {
                fail("a reading of producer \(p) seq \(seq) is in readings and in dead_letters")
            }
        }
    }

    mutating func finalCheck() -> String? {
        for c in clients {
            for seq in 1...UInt64(max(1, c.total)) where c.total > 0 {
                let count = stored(c.producer, seq)
                let sent = sentCounts[c.producer][seq] ?? -1
                if count != sent || outcomes[c.producer][seq] == nil { fail("producer \(c.producer) seq \(seq): \(sent) readings sent, \(count) stored") }
            }
        }
        if flow.outstanding > budget { fail("outstanding above budget at the end") }
        return failure
    }
}
