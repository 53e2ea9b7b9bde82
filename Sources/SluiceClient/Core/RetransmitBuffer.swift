/// Every batch sent (or cut) but not yet acknowledged, in seq order, bounded in bytes.
///
/// A batch leaves only when the server acks it or rejects it whole; one that `Welcome.committed_seq` says was
/// committed earlier is resent too, so that its duplicate ack reports what the server stored. After a
/// reconnect every batch still here is resent, oldest first, before anything new: `sentCount` marks how many
/// from the front have gone out on the current session.
public struct RetransmitBuffer<Payload: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var seq: UInt64
        public var readings: Int
        public var bytes: Int
        public var payload: Payload
    }

    private var entries: [Entry] = []
    private var head = 0
    /// Entries `head ..< head + sentCount` were sent on the current session.
    private var sentCount = 0

    /// The byte budget; `isFull` once the bytes held reach it.
    public let capacityBytes: Int
    public private(set) var bytes = 0
    public private(set) var readings = 0

    public init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    public var count: Int { entries.count - head }
    public var isEmpty: Bool { count == 0 }
    /// True once the bytes held reach the budget: `send` then waits for acks. A single batch may exceed it
    /// (otherwise a large batch could never be sent), so the bound is budget plus one batch.
    public var isFull: Bool { bytes >= capacityBytes }

    /// Adds a freshly cut batch. Its seq must be above every seq held.
    public mutating func append(seq: UInt64, readings: Int, bytes: Int, payload: Payload) {
        if let last = entries.last, head < entries.count {
            precondition(seq > last.seq, "seq \(seq) appended after \(last.seq): seqs must increase")
        }
        entries.append(Entry(seq: seq, readings: readings, bytes: bytes, payload: payload))
        self.bytes += bytes
        self.readings += readings
    }

    /// The oldest batch not yet sent on this session.
    public var nextToSend: Entry? {
        let i = head + sentCount
        return i < entries.count ? entries[i] : nil
    }

    /// Marks `nextToSend` as sent on this session, letting `update` note it in the payload (a spooled batch's
    /// first transmission is a send, not a resend).
    public mutating func markNextSent(_ update: (inout Payload) -> Void = { _ in }) {
        precondition(head + sentCount < entries.count, "nothing left to send")
        update(&entries[head + sentCount].payload)
        sentCount += 1
    }

    /// A new session: everything held must be sent again.
    public mutating func sessionRestarted() { sentCount = 0 }

    /// Removes the batch with `seq` (acked or rejected whole) and returns it; nil if not held.
    @discardableResult
    public mutating func remove(seq: UInt64) -> Entry? {
        guard let i = index(of: seq) else { return nil }
        let entry = entries[i]
        if i < head + sentCount { sentCount -= 1 }
        if i == head {
            head += 1
        } else {
            entries.remove(at: i)
        }
        bytes -= entry.bytes
        readings -= entry.readings
        compact()
        return entry
    }

    /// The batch with `seq`, if held.
    public func entry(seq: UInt64) -> Entry? { index(of: seq).map { entries[$0] } }

    /// Every entry held, oldest first.
    public var all: ArraySlice<Entry> { entries[head...] }

    private func index(of seq: UInt64) -> Int? {
        // Acks arrive in seq order, so the front is almost always the answer.
        if head < entries.count, entries[head].seq == seq { return head }
        var lo = head
        var hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].seq < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < entries.count && entries[lo].seq == seq ? lo : nil
    }

    private mutating func compact() {
        if head == entries.count {
            entries.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 256 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }
}
