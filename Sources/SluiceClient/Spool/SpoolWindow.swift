/// The client's view of its spool: which spooled batches wait on disk only (the in-memory retransmit window
/// was full when they were spooled, or an earlier run left them), and the bookkeeping that keeps appends,
/// loads and releases in order.
///
/// Batches move disk → `RetransmitBuffer` strictly in seq order: a new batch goes straight to the buffer only
/// when nothing older still waits on disk, so the buffer's seqs keep increasing.
struct SpoolWindow {
    private var backlog: [SpoolEntry] = []
    private var head = 0
    private(set) var backlogReadings = 0

    /// A read from disk is running; new batches queue behind it.
    var loading = false
    /// An append is running; the next `send` waits for it, so records land in seq order.
    var appending = false
    var appendWaiters: [CheckedContinuation<Void, Never>] = []
    /// Acknowledged seqs not yet released (a release deletes files: it runs off the actor, one at a time).
    var toRelease: [UInt64] = []
    var releasing = false
    /// Spooled batches not yet acknowledged (on disk only, or in the buffer too).
    var liveBatches = 0
    var liveReadings = 0
    var waitingForRoom = false
    var syncTask: Task<Void, Never>?

    init(recovered: [SpoolEntry] = []) {
        backlog = recovered
        backlogReadings = recovered.reduce(0) { $0 + $1.readings }
        liveBatches = recovered.count
        liveReadings = backlogReadings
    }

    var backlogIsEmpty: Bool { head == backlog.count }
    var backlogCount: Int { backlog.count - head }

    mutating func push(_ entry: SpoolEntry) {
        backlog.append(entry)
        backlogReadings += entry.readings
    }

    /// The oldest entries on disk whose frames fit in `bytes` (at least one, so a batch larger than the whole
    /// window still moves).
    mutating func takeFront(fitting bytes: Int) -> [SpoolEntry] {
        var taken: [SpoolEntry] = []
        var total = 0
        while head < backlog.count, taken.isEmpty || total + backlog[head].frameBytes <= bytes {
            total += backlog[head].frameBytes
            backlogReadings -= backlog[head].readings
            taken.append(backlog[head])
            head += 1
        }
        compact()
        return taken
    }

    /// Removes these seqs from the disk-only backlog (drop-oldest); returns the entries that were there.
    mutating func remove(_ seqs: Set<UInt64>) -> [SpoolEntry] {
        var removed: [SpoolEntry] = []
        var kept: [SpoolEntry] = []
        for e in backlog[head...] {
            if seqs.contains(e.seq) { removed.append(e) } else { kept.append(e) }
        }
        backlog = kept
        head = 0
        backlogReadings = kept.reduce(0) { $0 + $1.readings }
        return removed
    }

    private mutating func compact() {
        if head == backlog.count {
            backlog.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 256 && head * 2 > backlog.count {
            backlog.removeFirst(head)
            head = 0
        }
    }
}
