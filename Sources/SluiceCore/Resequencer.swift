/// Puts work that finishes out of order back into the order it arrived in.
///
/// A session's batches are decoded and validated concurrently (the bounded task group finishes them in any
/// order), but one producer's batches must reach the writer pool in the order they were received, because the
/// pool commits a producer's batches in submission order and deduplicates by a committed high-water seq. Each
/// batch takes a ticket when it arrives; `finish` hands back every item whose turn has come.
public struct Resequencer<Item> {
    /// The position of one unit of work in arrival order.
    public typealias Ticket = UInt64

    private var nextTicket: Ticket = 0
    private var nextToRelease: Ticket = 0
    private var finished: [Ticket: Item] = [:]

    public init() {}

    /// Takes the next ticket; the item finished under it is released after every earlier ticket's.
    public mutating func take() -> Ticket {
        defer { nextTicket += 1 }
        return nextTicket
    }

    /// Tickets taken but not yet released (still running, or finished and waiting for an earlier one).
    public var pending: Int { Int(nextTicket - nextToRelease) }

    /// Items finished but held back behind an unfinished earlier ticket.
    public var heldBack: Int { finished.count }

    /// Records that `ticket`'s work finished with `item`, and returns the items now releasable, in order,
    /// with their tickets.
    public mutating func finish(_ ticket: Ticket, _ item: Item) -> [(ticket: Ticket, item: Item)] {
        precondition(ticket < nextTicket, "ticket \(ticket) was never taken (next is \(nextTicket))")
        precondition(
            ticket >= nextToRelease && finished[ticket] == nil, "ticket \(ticket) finished twice")
        if ticket != nextToRelease {
            finished[ticket] = item
            return []
        }
        var released = [(ticket: ticket, item: item)]
        nextToRelease += 1
        while let next = finished.removeValue(forKey: nextToRelease) {
            released.append((ticket: nextToRelease, item: next))
            nextToRelease += 1
        }
        return released
    }
}

extension Resequencer: Sendable where Item: Sendable {}
