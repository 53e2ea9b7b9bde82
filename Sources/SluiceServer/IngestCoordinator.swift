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

    func recall(_ readings: Int) {
        eventLoop.execute { handler.value.creditRecalled(readings) }
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

    /// The session's token was revoked (SIGHUP reload): close with `UNAUTHENTICATED`.
    func revoke() {
        eventLoop.execute { handler.value.tokenRevoked() }
    }
}

/// Credit frames to send once the lock is released.
private struct CreditMessages {
    var grants: [FlowController.Grant]
    var grantHandles: [SessionHandle?]
    var recalls: [FlowController.Recall]
    var recallHandles: [SessionHandle?]
    static let none = CreditMessages(grants: [], grantHandles: [], recalls: [], recallHandles: [])
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
        /// Connections not yet authenticated, with their source address; and how many per address.
        var unauthenticated: [UInt64: String] = [:]
        var unauthenticatedPerAddress: [String: Int] = [:]
        /// The token each authenticated connection used (none for anonymous loopback sessions).
        var sessionTokens: [UInt64: String] = [:]
        /// Refusals at accept since the last warning about them (a flood must not flood the log too).
        var refusedSinceWarning = 0
        var lastRefusalWarning: ContinuousClock.Instant?

        /// The flow controller's decisions with the sessions to tell, looked up under the lock.
        mutating func take(_ grants: [FlowController.Grant]) -> CreditMessages {
            let recalls = flow.takeRecalls()
            guard !grants.isEmpty || !recalls.isEmpty else { return .none }
            return CreditMessages(
                grants: grants, grantHandles: grants.map { connections[$0.connection] },
                recalls: recalls, recallHandles: recalls.map { connections[$0.connection] })
        }

        mutating func authenticated(_ id: UInt64) {
            guard let address = unauthenticated.removeValue(forKey: id) else { return }
            let left = (unauthenticatedPerAddress[address] ?? 1) - 1
            unauthenticatedPerAddress[address] = left > 0 ? left : nil
        }
    }

    private let state: NIOLockedValueBox<State>
    let metrics: ServerMetrics
    let maxConnections: Int
    /// Pre-authentication caps (0 = none): in all, and per source address.
    let maxUnauthenticated: Int
    let maxUnauthenticatedPerAddress: Int
    private let logger: Logger

    init(
        flow: FlowController.Configuration, tokens: TokenTable, maxConnections: Int, metrics: ServerMetrics, logger: Logger,
        maxUnauthenticated: Int = 0, maxUnauthenticatedPerAddress: Int = 0
    ) {
        self.state = NIOLockedValueBox(State(flow: FlowController(configuration: flow), tokens: tokens))
        self.metrics = metrics
        self.maxConnections = maxConnections
        self.maxUnauthenticated = maxUnauthenticated
        self.maxUnauthenticatedPerAddress = maxUnauthenticatedPerAddress
        self.logger = logger
    }

    // MARK: Connections

    enum Admission {
        case admitted(UInt64)
        case refused(String)
    }

    /// A TCP connection arrived from `address`. Its id is also the session id `Welcome` reports.
    ///
    /// Until it authenticates it counts against the pre-authentication caps, not `maxConnections`, so idle
    /// sockets (a flood from one address) cannot lock out clients that have a token.
    func connectionAccepted(address: String = "?", register: (UInt64) -> SessionHandle) -> Admission {
        let result: Admission = state.withLockedValue { s in
            if s.draining { return .refused("server is shutting down: reconnect in a moment") }
            if s.connections.count - s.unauthenticated.count >= maxConnections {
                return .refused("connection limit (\(maxConnections)) reached: retry later or raise --max-connections")
            }
            if maxUnauthenticated > 0 && s.unauthenticated.count >= maxUnauthenticated {
                return .refused(
                    "\(maxUnauthenticated) connections are waiting to authenticate (the limit): retry later or raise --max-unauthenticated")
            }
            if maxUnauthenticatedPerAddress > 0 && s.unauthenticatedPerAddress[address, default: 0] >= maxUnauthenticatedPerAddress {
                return .refused(
                    "\(maxUnauthenticatedPerAddress) connections from \(address) are waiting to authenticate (the limit per address): finish their handshakes first, or raise --max-unauthenticated-per-address")
            }
            let id = s.nextConnectionID
            s.nextConnectionID += 1
            s.connections[id] = register(id)
            s.unauthenticated[id] = address
            s.unauthenticatedPerAddress[address, default: 0] += 1
            return .admitted(id)
        }
        switch result {
        case .admitted: metrics.connectionOpened()
        case .refused(let reason):
            let count = state.withLockedValue { s -> Int? in
                s.refusedSinceWarning += 1
                let now = ContinuousClock.now
                if let last = s.lastRefusalWarning, now - last < .seconds(10) { return nil }
                s.lastRefusalWarning = now
                defer { s.refusedSinceWarning = 0 }
                return s.refusedSinceWarning
            }
            if let count {
                logger.warning(
                    "connections refused at accept", metadata: ["count": "\(count)", "reason": "\(reason)", "address": "\(address)"])
            }
        }
        return result
    }

    /// A connection closed: its held credit returns to the budget, its producer slot frees up.
    func connectionClosed(_ id: UInt64, producer: ProducerID?) {
        let (credit, known) = state.withLockedValue { s -> (CreditMessages, Bool) in
            guard s.connections.removeValue(forKey: id) != nil else { return (.none, false) }
            s.authenticated(id)
            s.sessionTokens[id] = nil
            if let producer, s.producers[producer] == id { s.producers[producer] = nil }
            guard s.opened.remove(id) != nil else { return (.none, true) }
            return (s.take(s.flow.close(id)), true)
        }
        if known { metrics.connectionClosed() }
        send(credit)
    }

    /// Opens the session of connection `id` for `producer`, taking the producer over from any older session.
    /// Returns the first credit window, or nil if the server started draining meanwhile. `returnsCredit`: the
    /// client answers `CreditRecall` (`Hello.credit_returns`).
    func openSession(_ id: UInt64, producer: ProducerID, returnsCredit: Bool = false) -> Int? {
        let opened = state.withLockedValue { s -> (Int, SessionHandle?)? in
            guard !s.draining, s.connections[id] != nil else { return nil }
            let previous = s.producers[producer].flatMap { $0 == id ? nil : s.connections[$0] }
            s.producers[producer] = id
            s.opened.insert(id)
            return (s.flow.open(id, returnsCredit: returnsCredit), previous)
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
        send(state.withLockedValue { s in s.take(s.flow.finished(id, readings: readings)) })
    }

    /// `id`'s client needs to hold `readings` credit in all for its next batch (`CreditRequest`).
    func requestCredit(_ id: UInt64, readings: Int) {
        send(
            state.withLockedValue { s in
                guard s.opened.contains(id) else { return .none }
                return s.take(s.flow.request(id, readings: readings))
            })
    }

    /// `id`'s client gave back `readings` of its credit (`CreditReturn`). Returns the credit it held instead
    /// when it gave back more than that (the session closes with `RESOURCE_EXHAUSTED`).
    func creditReturned(_ id: UInt64, readings: Int) -> Int? {
        let (credit, violation) = state.withLockedValue { s -> (CreditMessages, Int?) in
            guard s.opened.contains(id) else { return (.none, nil) }
            switch s.flow.returned(id, readings: readings) {
            case .accepted(let grants): return (s.take(grants), nil)
            case .violation(let held, _): return (.none, held)
            }
        }
        if violation == nil, readings > 0 { metrics.returned(readings) }
        send(credit)
        return violation
    }

    /// Feeds the writer pool's signals to the flow controller (called a few times a second).
    func observe(_ stats: WriterPoolStats) {
        let (grants, held, inFlight, withheld, waiting) = state.withLockedValue { s in
            // A stalled writer commits nothing however short the queue: withhold credit as for a slow commit.
            let latency = stats.stall == nil ? stats.commitLatencyP99Seconds : .infinity
            let observed = s.flow.observe(queueDepth: stats.queuedReadings, commitLatencyP99: latency)
            let grants = s.take(observed + s.flow.advance(to: NIODeadline.now().uptimeNanoseconds))
            return (grants, s.flow.creditHeld, s.flow.outstanding, s.flow.withholding != nil, s.flow.waitingConnections)
        }
        metrics.observe(stats: stats, creditHeld: held, inFlight: inFlight, withheld: withheld, waiting: waiting)
        send(grants)
    }

    /// Updates the gauges from `stats` without feeding the flow controller (a `/metrics` scrape).
    func refreshGauges(_ stats: WriterPoolStats) {
        let (held, inFlight, withheld, waiting) = state.withLockedValue { s in
            (s.flow.creditHeld, s.flow.outstanding, s.flow.withholding != nil, s.flow.waitingConnections)
        }
        metrics.observe(stats: stats, creditHeld: held, inFlight: inFlight, withheld: withheld, waiting: waiting)
    }

    var creditHeld: Int { state.withLockedValue { $0.flow.creditHeld } }

    /// Sends what the flow controller decided: grants, then recalls.
    private func send(_ credit: CreditMessages) {
        guard !credit.grants.isEmpty || !credit.recalls.isEmpty else { return }
        for (grant, handle) in zip(credit.grants, credit.grantHandles) {
            metrics.granted(grant.readings)
            handle?.grant(grant.readings)
        }
        for (recall, handle) in zip(credit.recalls, credit.recallHandles) {
            metrics.recalled(recall.readings)
            handle?.recall(recall.readings)
        }
    }

    // MARK: Tokens

    /// Checks a token. The table is copied out under the lock (a reference-count bump) and the SHA-256 runs
    /// outside it, so a flood of (long) tokens never holds up another session's credit or ack path.
    func authorize(token: String, peerIsLoopback: Bool) -> TokenTable.Authorization {
        let tokens = state.withLockedValue { $0.tokens }
        return tokens.authorize(token: token, peerIsLoopback: peerIsLoopback)
    }

    /// Connection `id` passed authentication (with `tokenID`, nil = anonymous loopback): it leaves the
    /// pre-authentication caps, and a later token reload that drops `tokenID` closes it.
    ///
    /// Returns false if `tokenID` was revoked while the connection was being authenticated.
    func connectionAuthenticated(_ id: UInt64, tokenID: String?) -> Bool {
        state.withLockedValue { s in
            guard s.connections[id] != nil else { return true }
            if let tokenID, !s.tokens.entries.contains(where: { $0.id == tokenID }) { return false }
            s.authenticated(id)
            s.sessionTokens[id] = tokenID
            return true
        }
    }

    /// Replaces the token table; every session whose token is no longer in it is closed with
    /// `UNAUTHENTICATED`. Returns how many were.
    @discardableResult
    func replaceTokens(_ tokens: TokenTable) -> Int {
        let valid = Set(tokens.entries.map(\.id))
        let revoked = state.withLockedValue { s -> [SessionHandle] in
            s.tokens = tokens
            return s.sessionTokens.compactMap { id, token in valid.contains(token) ? nil : s.connections[id] }
        }
        for handle in revoked { handle.revoke() }
        return revoked.count
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
