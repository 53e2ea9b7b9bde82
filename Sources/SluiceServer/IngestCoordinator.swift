import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore
import SluiceStore

/// What the rest of the server may ask of one session, from any thread: every call hops to the session's
/// event loop, where its handler and state machine live.
struct SessionHandle: Sendable {
    let id: UInt64
    let eventLoop: any EventLoop
    let handler: NIOLoopBound<SessionHandler>

    func grant(_ readings: Int) {
        eventLoop.execute { handler.value.creditGranted(readings) }
    }

    func shutdown() {
        eventLoop.execute { handler.value.shutdownRequested() }
    }

    func replace() {
        eventLoop.execute { handler.value.replacedByNewerSession() }
    }

    func decoded(ticket: UInt64, _ result: PipelineResult) {
        eventLoop.execute { handler.value.pipelineFinished(ticket: ticket, result) }
    }

    func committed(seq: UInt64, _ outcome: BatchOutcome) {
        eventLoop.execute { handler.value.batchCommitted(seq: seq, outcome) }
    }

    func authenticated(_ result: Result<UInt64, any Error>) {
        eventLoop.execute { handler.value.authenticated(result) }
    }
}

/// State every session shares: the flow controller, which connections are open, which session speaks for
/// which producer, the token table. One lock guards it all; every critical section is a few dictionary
/// operations, and actions (sending credit, replacing a session) happen after the lock is released.
final class IngestCoordinator: Sendable {
    private struct State {
        var flow: FlowController
        var connections: [UInt64: SessionHandle] = [:]
        var opened: Set<UInt64> = []
        var producers: [ProducerID: UInt64] = [:]
        var nextConnectionID: UInt64 = 1
        var draining = false
        var tokens: TokenTable
    }

    private let state: NIOLockedValueBox<State>
    let metrics: ServerMetrics
    let maxConnections: Int
    private let logger: Logger

    init(flow: FlowController.Configuration, tokens: TokenTable, maxConnections: Int, metrics: ServerMetrics, logger: Logger) {
        self.state = NIOLockedValueBox(State(flow: FlowController(configuration: flow), tokens: tokens))
        self.metrics = metrics
        self.maxConnections = maxConnections
        self.logger = logger
    }

    // MARK: Connections

    enum Admission {
        case admitted(UInt64)
        case refused(String)
    }

    /// A TCP connection arrived. Its id is also the session id `Welcome` reports.
    func connectionAccepted(register: (UInt64) -> SessionHandle) -> Admission {
        let result: Admission = state.withLockedValue { s in
            if s.draining { return .refused("server is shutting down: reconnect in a moment") }
            if s.connections.count >= maxConnections {
                return .refused("connection limit (\(maxConnections)) reached: retry later or raise --max-connections")
            }
            let id = s.nextConnectionID
            s.nextConnectionID += 1
            s.connections[id] = register(id)
            return .admitted(id)
        }
        if case .admitted = result { metrics.connectionOpened() }
        return result
    }

    /// A connection closed: its held credit returns to the budget, its producer slot frees up.
    func connectionClosed(_ id: UInt64, producer: ProducerID?) {
        let (grants, known) = state.withLockedValue { s -> ([FlowController.Grant], Bool) in
            guard s.connections.removeValue(forKey: id) != nil else { return ([], false) }
            if let producer, s.producers[producer] == id { s.producers[producer] = nil }
            guard s.opened.remove(id) != nil else { return ([], true) }
            return (s.flow.close(id), true)
        }
        if known { metrics.connectionClosed() }
        send(grants)
    }

    /// Opens the session of connection `id` for `producer`, taking the producer over from any older session.
    /// Returns the first credit window, or nil if the server started draining meanwhile.
    func openSession(_ id: UInt64, producer: ProducerID) -> Int? {
        let opened = state.withLockedValue { s -> (Int, SessionHandle?)? in
            guard !s.draining, s.connections[id] != nil else { return nil }
            let previous = s.producers[producer].flatMap { $0 == id ? nil : s.connections[$0] }
            s.producers[producer] = id
            s.opened.insert(id)
            return (s.flow.open(id), previous)
        }
        guard let (credit, previous) = opened else { return nil }
        if let previous {
            logger.info(
                "session replaced by a newer one", metadata: ["producer": "\(producer)", "old_session": "\(previous.id)", "session": "\(id)"])
            previous.replace()
        }
        if credit > 0 { metrics.granted(credit) }
        return credit
    }

    // MARK: Credit

    func batchReceived(_ id: UInt64, readings: Int) -> CreditLedger.Action {
        state.withLockedValue { $0.flow.batchReceived(id, readings: readings) }
    }

    /// A batch of `id` left the pipeline (committed, duplicate, failed, or rejected whole).
    func batchFinished(_ id: UInt64, readings: Int) {
        let grants = state.withLockedValue { $0.flow.finished(id, readings: readings) }
        send(grants)
    }

    /// `id`'s client needs to hold `readings` credit in all for its next batch (`CreditRequest`).
    func requestCredit(_ id: UInt64, readings: Int) {
        let grants = state.withLockedValue { s -> [FlowController.Grant] in
            guard s.opened.contains(id) else { return [] }
            return s.flow.request(id, readings: readings)
        }
        send(grants)
    }

    /// Feeds the writer pool's signals to the flow controller (called a few times a second).
    func observe(_ stats: WriterPoolStats) {
        let (grants, held, inFlight, withheld, waiting) = state.withLockedValue { s in
            let grants = s.flow.observe(queueDepth: stats.queuedReadings, commitLatencyP99: stats.commitLatencyP99Seconds)
            return (grants, s.flow.creditHeld, s.flow.outstanding, s.flow.withholding != nil, s.flow.waitingConnections)
        }
        metrics.observe(stats: stats, creditHeld: held, inFlight: inFlight, withheld: withheld, waiting: waiting)
        send(grants)
    }

    var creditHeld: Int { state.withLockedValue { $0.flow.creditHeld } }

    private func send(_ grants: [FlowController.Grant]) {
        guard !grants.isEmpty else { return }
        let handles = state.withLockedValue { s in grants.map { s.connections[$0.connection] } }
        for (grant, handle) in zip(grants, handles) {
            metrics.granted(grant.readings)
            handle?.grant(grant.readings)
        }
    }

    // MARK: Tokens

    func authorize(token: String, peerIsLoopback: Bool) -> TokenTable.Authorization {
        state.withLockedValue { $0.tokens.authorize(token: token, peerIsLoopback: peerIsLoopback) }
    }

    func replaceTokens(_ tokens: TokenTable) {
        state.withLockedValue { $0.tokens = tokens }
    }

    // MARK: Drain

    /// Stops admitting connections and granting credit; tells every session to drain. Returns how many
    /// connections were open.
    @discardableResult
    func beginDrain() -> Int {
        let handles = state.withLockedValue { s -> [SessionHandle] in
            s.draining = true
            s.flow.stopGranting()
            return Array(s.connections.values)
        }
        for handle in handles { handle.shutdown() }
        return handles.count
    }

    var openConnections: Int { state.withLockedValue { $0.connections.count } }

    /// Every connection still open (for closing stragglers when the drain times out).
    var handles: [SessionHandle] { state.withLockedValue { Array($0.connections.values) } }
}

extension SessionHandle {
    /// Closes the connection now (a drain that ran out of time).
    func forceClose() {
        eventLoop.execute { handler.value.forceClose() }
    }
}
