/// One connection's credit, counted in readings (DESIGN §2, Credit).
///
/// `held` is what the client may still send; `inFlight` is what it sent that has not finished yet (being
/// decoded, queued or written). Their sum is what the connection costs the global budget.
public struct CreditLedger: Sendable, Equatable {
    /// What receiving a batch means for the connection.
    public enum Action: Sendable, Equatable {
        /// The batch fits in the credit held; that credit is now in flight.
        case accepted
        /// The client sent more readings than it held credit for: `RESOURCE_EXHAUSTED`, connection closed.
        case violation(held: Int, sent: Int)
    }

    public private(set) var held: Int
    public private(set) var inFlight: Int
    /// The most this connection may have outstanding right now (before the fair-share cap). It starts small
    /// and grows by what the connection actually gets committed, slow-start style, so credit goes to
    /// connections that use it and an idle one holds little (credit comes back only when the client answers a
    /// recall, and an older client never does).
    public internal(set) var window: Int
    /// True once the connection has used most of its credit (its window grew): until then its credit counts
    /// against the small slice of the budget that connections not seen busy may hold together.
    public internal(set) var proven = false

    public init(initial: Int = 0, window: Int? = nil) {
        precondition(initial >= 0, "initial credit cannot be negative")
        self.held = initial
        self.inFlight = 0
        self.window = window ?? initial
    }

    /// Credit held plus readings in flight: the connection's share of the global budget in use.
    public var outstanding: Int { held + inFlight }

    /// A batch of `readings` arrived.
    public mutating func batchReceived(readings: Int) -> Action {
        precondition(readings >= 0, "a batch cannot hold a negative number of readings")
        guard readings <= held else { return .violation(held: held, sent: readings) }
        held -= readings
        inFlight += readings
        return .accepted
    }

    /// A batch of `readings` left the pipeline: committed, found duplicate, or rejected whole.
    public mutating func finished(readings: Int) {
        precondition(readings <= inFlight, "finished \(readings) readings but only \(inFlight) were in flight")
        inFlight -= readings
    }

    /// `readings` more credit was granted to the client.
    public mutating func granted(_ readings: Int) {
        precondition(readings > 0, "a grant must be positive")
        held += readings
    }

    /// The client gave back `readings` of the credit it holds (`CreditReturn`). False, changing nothing, if it
    /// holds less: a client cannot give back what it was never granted.
    public mutating func returned(_ readings: Int) -> Bool {
        guard readings >= 0, readings <= held else { return false }
        held -= readings
        return true
    }

    /// The connection closed: its held credit is void. What is in flight stays in flight until it finishes.
    public mutating func closeHeld() -> Int {
        defer { held = 0 }
        return held
    }
}
