/// The global flow controller: one budget of readings in flight shared fairly among connections, granted as
/// batches finish, withheld while the database lags (DESIGN §2, Credit).
///
/// Readings in flight = credit held by clients + readings received and not yet finished (decoding, queued,
/// being written). That sum never exceeds `budget`, so memory stays bounded however many clients connect.
/// Fairness: each connection is granted at most its fair share (`budget / connections`, capped at
/// `maxWindow`), and connections left short when the budget was exhausted are served first, in the order they
/// started waiting, as soon as budget frees up.
///
/// Windows (slow start): granted credit cannot be taken back, so a connection does not get its whole share
/// up front. It starts with `initialWindow` and its window grows by the readings it gets committed while it
/// is using most of its credit (doubling per round trip, as TCP's slow start), up to the fair share and
/// `maxWindow`. Connections whose window never had to grow (idle or trickling ones) together hold at most
/// `unprovenShare` of the budget (each still gets `minimumWindow`), so a crowd of idle connections cannot pin
/// the budget that busy ones need, and 64 connections opened at once all start with credit.
///
/// Requests (a reconnect storm never starves): a connection whose next batch needs more credit than it holds
/// says so (`CreditRequest`: the credit it needs to hold in all). Requests wait in one line, first come first
/// served, and come before everything else: budget that frees goes to the head of the line until the head's
/// whole request can be granted at once (head-of-line, so a big request is never starved by small ones),
/// then to the next. Windows, fair share and `unprovenShare` never hold a request back; a request is at most
/// `maxRequest` (`maxWindow`, and never more than `budget`), so every request can be granted once that much of
/// the budget is free. A connection that never asks (an older client) joins the same line by itself when it
/// has nothing in flight and holds less than `minimumWindow`, and is served `minimumWindow`. While the line
/// is not empty, no other credit is granted (first windows of new connections included), so what frees up
/// reaches the line.
///
/// Recalls (idle credit never pins the budget): credit granted is the client's until it sends it, so
/// connections that went idle holding credit could hold the budget the line waits for, for ever. While the
/// head of the line cannot be granted, the controller recalls the credit of idle connections (nothing in
/// flight), those holding most first: of those not in line until what is free plus what is being recalled
/// covers the line, then of those waiting behind the head until it covers the head. Credit granted for a request is the asker's to use first: it is recalled only once it has
/// gone unused for `reservationTimeout` (time as told by `advance(to:)`), so two askers never take turns
/// recalling each other's grant, and one that asks and never sends cannot pin what it was granted. A client that said it answers recalls (`Hello.credit_returns`) gives back what it still
/// holds (`CreditReturn`, `returned(_:readings:)`) and asks again when it next needs credit; the session closes
/// one that does not answer in time. What an older client (no `credit_returns`) holds cannot be recalled;
/// `unprovenShare` keeps that small.
///
/// A batch costs `max(1, readings)` credit (`cost(ofBatchWith:)`): a batch without readings still costs one,
/// so a client without credit can never grow the writer queue.
///
/// Backpressure: while the write queue is above `queueHighWater`, or commit latency p99 is above
/// `latencyTarget`, no credit is granted; granting resumes once the queue is below `queueLowWater` and latency
/// is back under target (or nothing is queued at all, so a stale latency figure cannot stall everybody).
public struct FlowController: Sendable {
    /// Tuning; the defaults suit the reference machine (DESIGN §6).
    public struct Configuration: Sendable, Equatable {
        /// Readings in flight across all connections.
        public var budget: Int
        /// The most credit one connection holds plus has in flight, however few connections there are (a
        /// granted `CreditRequest` may add one batch, at most this much, on top of what is in flight).
        public var maxWindow: Int
        /// The first window (Welcome) is at most this; the window then grows as the connection uses it.
        public var initialWindow: Int
        /// A new connection gets at least this much credit while the budget has room, even when connections
        /// that have not sent anything yet already hold their whole `unprovenShare`.
        public var minimumWindow: Int
        /// The fraction of the budget that connections whose window never grew may hold together.
        public var unprovenShare: Double
        /// Grants smaller than this fraction of a connection's share are deferred (fewer `Credit` frames)
        /// while the connection still has readings in flight.
        public var grantFraction: Double
        /// Stop granting above this write-queue depth (readings).
        public var queueHighWater: Int
        /// Resume granting below this write-queue depth (readings).
        public var queueLowWater: Int
        /// Stop granting while commit latency p99 is above this, in seconds.
        public var latencyTarget: Double
        /// Credit granted for a request and not used for this long (nanoseconds) can be recalled like idle
        /// credit.
        public var reservationTimeout: UInt64

        public init(
            budget: Int = 1_000_000, maxWindow: Int = 262_144, initialWindow: Int = 16_384,
            minimumWindow: Int = 64, unprovenShare: Double = 0.25, grantFraction: Double = 0.25,
            queueHighWater: Int = 600_000, queueLowWater: Int = 200_000, latencyTarget: Double = 0.5,
            reservationTimeout: UInt64 = 5_000_000_000
        ) {
            precondition(budget > 0 && maxWindow > 0, "budget and window must be positive")
            precondition(queueLowWater <= queueHighWater, "the low-water mark must not exceed the high-water mark")
            self.budget = budget
            self.maxWindow = maxWindow
            self.initialWindow = max(1, min(initialWindow, maxWindow))
            self.minimumWindow = max(1, min(minimumWindow, self.initialWindow))
            self.unprovenShare = min(1, max(0, unprovenShare))
            self.grantFraction = grantFraction
            self.queueHighWater = queueHighWater
            self.queueLowWater = queueLowWater
            self.latencyTarget = latencyTarget
            self.reservationTimeout = reservationTimeout
        }

        /// The largest credit request that can be granted: `maxWindow`, and never more than the budget.
        public var maxRequest: Int { min(maxWindow, budget) }
    }

    /// Identifies one connection (the server's session id).
    public typealias ConnectionID = UInt64

    /// Credit to send to one connection.
    public struct Grant: Sendable, Equatable {
        public var connection: ConnectionID
        public var readings: Int
        public init(connection: ConnectionID, readings: Int) {
            self.connection = connection
            self.readings = readings
        }
    }

    /// Credit to take back from one connection (`CreditRecall`): it gives back up to `readings`.
    public struct Recall: Sendable, Equatable {
        public var connection: ConnectionID
        public var readings: Int
        public init(connection: ConnectionID, readings: Int) {
            self.connection = connection
            self.readings = readings
        }
    }

    /// What a `CreditReturn` came to.
    public enum Return: Sendable, Equatable {
        /// The credit is back in the budget; these grants follow from it.
        case accepted([Grant])
        /// The client gave back more than it holds (`RESOURCE_EXHAUSTED`, connection closed); nothing changed.
        case violation(held: Int, returned: Int)
    }

    /// Why granting is withheld, or nil while credit flows.
    public enum Withholding: Sendable, Equatable {
        case queueAboveHighWater(depth: Int)
        case commitLatencyAboveTarget(p99: Double)
        case draining
    }

    /// A connection waiting in the request line: it wants to hold `readings` credit.
    private struct Demand: Sendable, Equatable {
        var readings: Int
        /// Its place in `requestLine` (an entry there with another ticket is stale).
        var ticket: UInt64
    }

    public let configuration: Configuration
    /// Connections waiting for the credit they asked for, by connection.
    private var demands: [ConnectionID: Demand] = [:]
    /// The request line, first come first served; entries from `requestHead` on, stale ones skipped.
    private var requestLine: [(connection: ConnectionID, ticket: UInt64)] = []
    private var requestHead = 0
    private var nextTicket: UInt64 = 0
    private var ledgers: [ConnectionID: CreditLedger] = [:]
    /// Connections that were left short of their share, first come first served.
    private var waiting = WaitingLine()
    /// Readings still in flight from connections that have closed: they occupy the queue until they finish.
    private var orphanedInFlight = 0
    /// Readings outstanding (held + in flight) of connections whose window never grew.
    private var unprovenOutstanding = 0
    /// Connections whose clients answer `CreditRecall`.
    private var recallable: Set<ConnectionID> = []
    /// Recalls sent and not answered yet, by connection, and their sum.
    private var recalling: [ConnectionID: Int] = [:]
    private var recallingTotal = 0
    /// Recalls decided and not yet taken by the server (`takeRecalls()`).
    private var recallsToSend: [Recall] = []
    /// Connections granted credit for a request that have not sent a batch since, and when (`now`).
    private var reservedAt: [ConnectionID: UInt64] = [:]
    /// The time last told by `advance(to:)`, in nanoseconds of a monotonic clock.
    private var now: UInt64 = 0
    public private(set) var withholding: Withholding?
    private var queueDepth = 0
    private var latencyP99 = 0.0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Readings in flight now, across every connection (held + received and unfinished).
    public private(set) var outstanding = 0

    /// Credit held by clients right now.
    public var creditHeld: Int { ledgers.values.reduce(0) { $0 + $1.held } }

    /// Connections open.
    public var connections: Int { ledgers.count }

    /// Connections left short of their share or of the credit they asked for, waiting for budget to free up.
    public var waitingConnections: Int { waiting.members.union(demands.keys).count }

    /// Connections waiting in the request line (a `CreditRequest`, or a client without credit that does not ask).
    public var pendingRequests: Int { demands.count }

    /// The credit `connection` waits for in the request line (what it wants to hold in all), if it does.
    public func pendingRequest(_ connection: ConnectionID) -> Int? { demands[connection]?.readings }

    /// The largest request that can be granted: `maxWindow`, and never more than the budget. The server's
    /// `max_batch_readings` is at most this, so every batch a client may send can be granted.
    public var maxRequest: Int { configuration.maxRequest }

    /// What a batch of `readings` readings costs: at least 1, so a batch without readings is not free.
    public static func cost(ofBatchWith readings: Int) -> Int { max(1, readings) }

    /// The ledger of `connection`, if open.
    public func ledger(_ connection: ConnectionID) -> CreditLedger? { ledgers[connection] }

    /// The most one connection may have outstanding with the current number of connections.
    public var fairShare: Int {
        max(1, min(configuration.maxWindow, configuration.budget / max(1, ledgers.count)))
    }

    private var available: Int { configuration.budget - outstanding }

    /// Readings recalled and not given back yet.
    public var recallsPending: Int { recallingTotal }

    /// Opens `connection`'s ledger and returns its first window (the `Welcome`'s initial credit). It can be
    /// 0 when the budget is exhausted; the connection is then first in line for budget that frees up.
    /// `returnsCredit`: its client answers `CreditRecall` (and asks with `CreditRequest` when it needs credit).
    public mutating func open(_ connection: ConnectionID, returnsCredit: Bool = false) -> Int {
        precondition(ledgers[connection] == nil, "connection \(connection) opened twice")
        ledgers[connection] = CreditLedger(initial: 0, window: configuration.initialWindow)
        if returnsCredit { recallable.insert(connection) }
        // While connections wait in the request line, the budget that frees is theirs: a new one queues behind.
        let lineWaiting = requestLineWaiting()
        if lineWaiting { waiting.append(connection) }
        let first = lineWaiting ? 0 : grantIfShort(connection, ignoringThreshold: true).first?.readings ?? 0
        // A connection held to less than the first window by the slice for connections not seen busy starts
        // its slow start from what it got, so it cannot jump to a big grant later. (One short of budget waits
        // in line for its whole first window instead.)
        if first > 0, !waiting.contains(connection) {
            ledgers[connection]?.window = max(configuration.minimumWindow, first)
        }
        queueIfStarved(connection)
        return first
    }

    /// Closes `connection`: its held credit returns to the budget at once, its in-flight readings when they
    /// finish (`finished` still accepts them). Returns grants for connections that can now use the budget.
    public mutating func close(_ connection: ConnectionID) -> [Grant] {
        guard var ledger = ledgers.removeValue(forKey: connection) else { return [] }
        if !ledger.proven { unprovenOutstanding -= ledger.outstanding }
        outstanding -= ledger.closeHeld()
        orphanedInFlight += ledger.inFlight
        waiting.remove(connection)
        demands[connection] = nil
        recallable.remove(connection)
        reservedAt[connection] = nil
        settleRecall(connection)
        return merged(distribute(after: nil))
    }

    /// `connection`'s client gave back `readings` of the credit it holds (`CreditReturn`: the answer to a
    /// recall, or unasked), in its turn after the batches it sent before. The credit is back in the budget.
    public mutating func returned(_ connection: ConnectionID, readings: Int) -> Return {
        guard var ledger = ledgers[connection] else { return .accepted([]) }
        guard ledger.returned(readings) else { return .violation(held: ledger.held, returned: readings) }
        ledgers[connection] = ledger
        if !ledger.proven { unprovenOutstanding -= readings }
        outstanding -= readings
        settleRecall(connection)
        reservedAt[connection] = nil
        // It gave its credit up: topping it up to its share again would only be recalled again. It asks when
        // it needs credit.
        waiting.remove(connection)
        if let demand = demands[connection], demand.readings <= ledger.held { demands[connection] = nil }
        return .accepted(merged(distribute(after: nil)))
    }

    /// Time passes (the server calls this a few times a second): credit granted for a request and unused for
    /// `reservationTimeout` becomes recallable. Returns grants this makes possible (recalls: `takeRecalls()`).
    public mutating func advance(to now: UInt64) -> [Grant] {
        self.now = max(self.now, now)
        guard reservedAt.values.contains(where: { self.now &- $0 >= configuration.reservationTimeout }) else { return [] }
        return merged(distribute(after: nil))
    }

    /// The recalls decided since the last call, to send as `CreditRecall` frames.
    public mutating func takeRecalls() -> [Recall] {
        defer { recallsToSend.removeAll() }
        return recallsToSend
    }

    /// A batch of `readings` arrived on `connection`; it costs `cost(ofBatchWith: readings)`.
    public mutating func batchReceived(_ connection: ConnectionID, readings: Int) -> CreditLedger.Action {
        guard var ledger = ledgers[connection] else {
            preconditionFailure("batch received on connection \(connection), which is not open")
        }
        let action = ledger.batchReceived(readings: Self.cost(ofBatchWith: readings))
        ledgers[connection] = ledger
        if action == .accepted { reservedAt[connection] = nil }
        return action
    }

    /// A batch of `readings` from `connection` finished (committed, duplicate, or rejected whole). Returns the
    /// grants this makes possible: connections waiting for budget first, then `connection` itself.
    public mutating func finished(_ connection: ConnectionID, readings batchReadings: Int) -> [Grant] {
        let readings = Self.cost(ofBatchWith: batchReadings)
        if var ledger = ledgers[connection] {
            let before = ledger.outstanding
            ledger.finished(readings: readings)
            if !ledger.proven { unprovenOutstanding -= readings }
            // Slow start: the window grows only while the connection is using most of its credit, so a
            // trickling producer's window (and what it holds) stays small.
            if ledger.held * 2 < before {
                ledger.window = min(configuration.maxWindow, ledger.window + readings)
                if !ledger.proven {
                    ledger.proven = true
                    unprovenOutstanding -= ledger.outstanding
                }
            }
            ledgers[connection] = ledger
        } else {
            precondition(readings <= orphanedInFlight, "finished readings of a closed connection twice")
            orphanedInFlight -= readings
        }
        outstanding -= readings
        let open = ledgers[connection] != nil
        var grants = distribute(after: open ? connection : nil)
        if open {
            queueIfStarved(connection)
            if demands[connection] != nil { grants += distribute(after: nil) }
        }
        return merged(grants)
    }

    /// `connection`'s client needs to hold `readings` credit in all to send its next batch (`CreditRequest`).
    /// It replaces an earlier request of the connection (keeping its place in line); 0, or no more than it
    /// holds, withdraws it. At most `maxRequest` is asked for (the session refuses bigger requests before they
    /// get here). Returns the grants this makes possible (the request line is served in order).
    public mutating func request(_ connection: ConnectionID, readings: Int) -> [Grant] {
        guard let ledger = ledgers[connection] else { return [] }
        let want = min(max(0, readings), maxRequest)
        guard want > ledger.held else {
            demands[connection] = nil
            return []
        }
        if demands[connection] != nil {
            demands[connection]!.readings = want  // replaces the earlier request in its place
        } else {
            enqueue(connection, readings: want)
        }
        return merged(distribute(after: nil))
    }

    /// Feeds the writer pool's current queue depth and commit latency p99 (seconds). Returns grants when this
    /// ends a period of withholding.
    public mutating func observe(queueDepth: Int, commitLatencyP99: Double) -> [Grant] {
        self.queueDepth = queueDepth
        self.latencyP99 = commitLatencyP99
        switch withholding {
        case .draining:
            return []
        case nil:
            if queueDepth > configuration.queueHighWater {
                withholding = .queueAboveHighWater(depth: queueDepth)
            } else if commitLatencyP99 > configuration.latencyTarget {
                withholding = .commitLatencyAboveTarget(p99: commitLatencyP99)
            }
            return []
        case .queueAboveHighWater, .commitLatencyAboveTarget:
            let latencyOK = commitLatencyP99 <= configuration.latencyTarget || queueDepth == 0
            guard queueDepth < configuration.queueLowWater && latencyOK else {
                withholding =
                    queueDepth >= configuration.queueLowWater
                    ? .queueAboveHighWater(depth: queueDepth) : .commitLatencyAboveTarget(p99: commitLatencyP99)
                return []
            }
            withholding = nil
            // Everybody short may be owed credit now: the waiting line first, then the rest, least served first
            // (ties by connection id, so the same history always grants the same way).
            let rest = ledgers.sorted { ($0.value.outstanding, $0.key) < ($1.value.outstanding, $1.key) }.map(\.key)
            for id in rest { waiting.append(id) }
            return merged(distribute(after: nil))
        }
    }

    /// The server is draining: no credit is granted from now on.
    public mutating func stopGranting() {
        withholding = .draining
        waiting.removeAll()
        demands.removeAll()
        recallsToSend.removeAll()
        requestLine.removeAll()
        requestHead = 0
    }

    // MARK: - Granting

    /// Serves the request line; once it is empty, the waiting line, then `connection`.
    private mutating func distribute(after connection: ConnectionID?) -> [Grant] {
        guard withholding == nil else { return [] }
        var grants = serveRequests()
        // The head of the request line could not be granted yet: the budget accumulates for it, and
        // `connection` is topped up once the line is empty.
        guard !requestLineWaiting() else {
            if let connection, let ledger = ledgers[connection], deficit(ledger) > 0 {
                waiting.append(connection)
            }
            recallIdleCredit()
            return grants
        }
        var stillWaiting: [ConnectionID] = []
        let line = waiting.takeAll()
        for id in line {
            if available <= 0 {
                stillWaiting.append(id)
                continue
            }
            grants += grantIfShort(id, ignoringThreshold: false, requeue: false)
            if let ledger = ledgers[id], deficit(ledger) >= threshold(for: ledger) {
                stillWaiting.append(id)
            }
        }
        waiting.prepend(stillWaiting)
        if let connection, !waiting.contains(connection) {
            grants += grantIfShort(connection, ignoringThreshold: false)
        }
        return grants
    }

    /// The smallest deficit worth a `Credit` frame: a fraction of the share while the connection has readings
    /// in flight (their finishing will trigger another look), anything at all once it has none (nothing else
    /// would, and the client may be waiting for room for one more batch).
    private func threshold(for ledger: CreditLedger) -> Int {
        ledger.inFlight == 0 ? 1 : max(1, Int(Double(target(ledger)) * configuration.grantFraction))
    }

    /// What `ledger`'s connection may have outstanding: its window, capped by the fair share.
    private func target(_ ledger: CreditLedger) -> Int {
        min(ledger.window, fairShare)
    }

    /// What `ledger`'s connection lacks of its target; for a connection that has not sent anything yet, also
    /// capped by what is left of the budget's slice for such connections (but never below `minimumWindow`).
    private func deficit(_ ledger: CreditLedger) -> Int {
        var want = target(ledger)
        if !ledger.proven {
            let allowance = Int(Double(configuration.budget) * configuration.unprovenShare)
            want = min(want, max(configuration.minimumWindow, ledger.outstanding + allowance - unprovenOutstanding))
        }
        return want - ledger.outstanding
    }

    /// Grants `connection` what it lacks of its fair share, as far as the budget allows; if the budget falls
    /// short, it joins the waiting line.
    private mutating func grantIfShort(
        _ connection: ConnectionID, ignoringThreshold: Bool, requeue: Bool = true
    ) -> [Grant] {
        guard withholding == nil, var ledger = ledgers[connection] else { return [] }
        let deficit = deficit(ledger)
        guard deficit > 0, ignoringThreshold || deficit >= threshold(for: ledger) else { return [] }
        let amount = min(deficit, available)
        if amount < deficit, requeue { waiting.append(connection) }
        guard amount > 0 else { return [] }
        ledger.granted(amount)
        ledgers[connection] = ledger
        if !ledger.proven { unprovenOutstanding += amount }
        outstanding += amount
        if let demand = demands[connection], ledger.held >= demand.readings {
            demands[connection] = nil
            reservedAt[connection] = now
        }
        return [Grant(connection: connection, readings: amount)]
    }

    // MARK: - The request line

    /// Grants the head of the request line what it lacks of its request, then the next, until the budget left
    /// cannot cover the head's whole request (it then waits at the head for budget to free).
    private mutating func serveRequests() -> [Grant] {
        var grants: [Grant] = []
        while let (id, demand) = lineHead() {
            guard var ledger = ledgers[id] else {
                popHead()
                continue
            }
            let need = demand.readings - ledger.held
            guard need > 0 else {
                demands[id] = nil
                popHead()
                continue
            }
            guard need <= available else { break }
            ledger.granted(need)
            ledgers[id] = ledger
            if !ledger.proven { unprovenOutstanding += need }
            outstanding += need
            demands[id] = nil
            reservedAt[id] = now
            popHead()
            grants.append(Grant(connection: id, readings: need))
        }
        return grants
    }

    /// True while a connection waits in the request line.
    private mutating func requestLineWaiting() -> Bool { lineHead() != nil }

    /// The first live entry of the request line (stale entries before it are dropped).
    private mutating func lineHead() -> (ConnectionID, Demand)? {
        while requestHead < requestLine.count {
            let entry = requestLine[requestHead]
            if let demand = demands[entry.connection], demand.ticket == entry.ticket { return (entry.connection, demand) }
            requestHead += 1
        }
        if requestHead > 0 {
            requestLine.removeAll(keepingCapacity: true)
            requestHead = 0
        }
        return nil
    }

    private mutating func popHead() {
        requestHead += 1
        if requestHead >= 1_024 && requestHead * 2 >= requestLine.count {
            requestLine.removeFirst(requestHead)
            requestHead = 0
        }
    }

    private mutating func enqueue(_ connection: ConnectionID, readings: Int) {
        nextTicket += 1
        demands[connection] = Demand(readings: readings, ticket: nextTicket)
        requestLine.append((connection, nextTicket))
    }

    // MARK: - Recalls

    /// The line waits for more than is free: recall the credit of idle connections whose clients answer
    /// recalls (nothing in flight, not holding a fresh grant for a request), those holding most first (ties by
    /// id, so the same history always recalls the same way). First from connections not in line, until what is
    /// free plus what is being recalled covers the whole line; then, if the head still cannot be covered, from
    /// connections waiting behind it: what each holds falls short of its own request anyway, and while they
    /// all hold part of what they asked for, none can be served (a deadlock the simulation found).
    private mutating func recallIdleCredit() {
        guard !recallable.isEmpty, withholding == nil, let (head, headDemand) = lineHead(),
            let headLedger = ledgers[head]
        else { return }
        var wanted = 0
        for index in requestHead..<requestLine.count {
            let entry = requestLine[index]
            guard let demand = demands[entry.connection], demand.ticket == entry.ticket,
                let ledger = ledgers[entry.connection]
            else { continue }
            wanted += max(0, demand.readings - ledger.held)
        }
        var idle: [(id: ConnectionID, held: Int, inLine: Bool)] = []
        for id in recallable where id != head && recalling[id] == nil {
            guard let ledger = ledgers[id], ledger.inFlight == 0, ledger.held > 0,
                reservedAt[id].map({ now &- $0 >= configuration.reservationTimeout }) ?? true
            else { continue }
            idle.append((id, ledger.held, demands[id] != nil))
        }
        guard !idle.isEmpty else { return }
        idle.sort { ($0.held, $1.id) > ($1.held, $0.id) }
        var shortfall = wanted - available - recallingTotal
        for holder in idle where !holder.inLine && shortfall > 0 {
            recall(holder.id, holder.held)
            shortfall -= holder.held
        }
        var headShortfall = headDemand.readings - headLedger.held - available - recallingTotal
        for holder in idle where holder.inLine && headShortfall > 0 {
            recall(holder.id, holder.held)
            headShortfall -= holder.held
        }
    }

    private mutating func recall(_ connection: ConnectionID, _ readings: Int) {
        recalling[connection] = readings
        recallingTotal += readings
        recallsToSend.append(Recall(connection: connection, readings: readings))
    }

    /// `connection`'s recall is answered (or void: it closed).
    private mutating func settleRecall(_ connection: ConnectionID) {
        if let pending = recalling.removeValue(forKey: connection) { recallingTotal -= pending }
    }

    /// A connection with nothing in flight and less than `minimumWindow` held has no commit to wait for:
    /// unless it asked for something already, it joins the request line for `minimumWindow` (a client that
    /// never sends `CreditRequest` is served too).
    private mutating func queueIfStarved(_ connection: ConnectionID) {
        // A client that answers recalls asks for credit itself when it needs it (it may have given it all back).
        guard withholding != .draining, demands[connection] == nil, !recallable.contains(connection),
            let ledger = ledgers[connection],
            ledger.inFlight == 0, ledger.held < configuration.minimumWindow
        else { return }
        enqueue(connection, readings: configuration.minimumWindow)
    }

    /// One grant per connection, in the order each was first granted (fewer `Credit` frames).
    private func merged(_ grants: [Grant]) -> [Grant] {
        guard grants.count > 1 else { return grants }
        var order: [ConnectionID] = []
        var total: [ConnectionID: Int] = [:]
        for grant in grants {
            if total[grant.connection] == nil { order.append(grant.connection) }
            total[grant.connection, default: 0] += grant.readings
        }
        return order.map { Grant(connection: $0, readings: total[$0]!) }
    }
}

/// Connections left short of their share, first come first served; each at most once.
private struct WaitingLine: Sendable {
    private var order: [FlowController.ConnectionID] = []
    private(set) var members: Set<FlowController.ConnectionID> = []

    var count: Int { members.count }

    func contains(_ id: FlowController.ConnectionID) -> Bool { members.contains(id) }

    /// Joins at the back, unless already in line.
    mutating func append(_ id: FlowController.ConnectionID) {
        if members.insert(id).inserted { order.append(id) }
    }

    /// Leaves the line (its entry in `order` is skipped from now on).
    mutating func remove(_ id: FlowController.ConnectionID) {
        members.remove(id)
        if members.isEmpty { order.removeAll(keepingCapacity: true) }
    }

    /// Empties the line, returning it in order.
    mutating func takeAll() -> [FlowController.ConnectionID] {
        var seen = Set<FlowController.ConnectionID>()
        let line = order.filter { members.contains($0) && seen.insert($0).inserted }
        order.removeAll(keepingCapacity: true)
        members.removeAll(keepingCapacity: true)
        return line
    }

    /// Puts `ids` (not in line) at the front, in their order.
    mutating func prepend(_ ids: [FlowController.ConnectionID]) {
        guard !ids.isEmpty else { return }
        let fresh = ids.filter { members.insert($0).inserted }
        order = fresh + order
    }

    mutating func removeAll() {
        order.removeAll()
        members.removeAll()
    }
}
