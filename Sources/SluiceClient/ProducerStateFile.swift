import Foundation

/// A producer's identity and the next seq it may use, kept in a small JSON file so a restarted producer keeps
/// both: `{"producer_id": "…uuid…", "next_seq": 123}`.
///
/// Why the seq too: the server deduplicates by a committed high-water seq per producer, so a producer that
/// restarted at seq 1 would have its new batches acked as duplicates and silently not written. `Welcome`'s
/// committed_seq catches most of that, but not batches of the previous run still being committed when the new
/// session opens. So seqs are reserved in blocks: before a seq past the reservation is used, the file is
/// rewritten (atomically, by rename) with the end of a new block, and a restarted producer starts there.
public struct ProducerState: Sendable, Equatable {
    public var producer: ProducerIdentity
    /// The first seq this producer may use (seqs start at 1).
    public var nextSeq: UInt64

    public init(producer: ProducerIdentity, nextSeq: UInt64) {
        self.producer = producer
        self.nextSeq = nextSeq
    }

    /// The file's text.
    public func encoded() -> String {
        "{\"producer_id\": \"\(producer)\", \"next_seq\": \(nextSeq)}\n"
    }

    /// Parses the file's text, naming what is wrong.
    public static func decode(_ text: String) throws(ClientError) -> ProducerState {
        func bad(_ why: String) -> ClientError { .invalidInput(why) }
        guard let data = text.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw bad("is not a JSON object") }
        guard let idText = object["producer_id"] as? String, let id = ProducerIdentity(uuidString: idText) else {
            throw bad("has no valid \"producer_id\" (a UUID)")
        }
        guard let number = object["next_seq"] as? NSNumber, number.int64Value >= 1 else {
            throw bad("has no valid \"next_seq\" (an integer ≥ 1)")
        }
        return ProducerState(producer: id, nextSeq: UInt64(number.int64Value))
    }
}

/// Reads and writes a `ProducerState` file. Blocking file I/O: call only from a thread you own (the client
/// runs it on NIO's thread pool).
public enum ProducerStateFile {
    /// Loads the file, or creates it with a random producer id and seq 1 if it does not exist.
    ///
    /// First takes an exclusive `flock` on `<path>.lock` for the rest of the process's life, so two processes
    /// cannot run as one producer (they would hand out the same seqs and have each other's batches deduplicated
    /// away): the second fails naming the file and the PID holding it. (The lock is on a file of its own because
    /// the state file is replaced by rename.) Clients in one process may share a file, one after the other.
    public static func loadOrCreate(path: String) throws(ClientError) -> ProducerState {
        try lock(path)
        if FileManager.default.fileExists(atPath: path) {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw .stateFile(path: path, reason: "cannot read it: \(error.localizedDescription)")
            }
            do {
                return try ProducerState.decode(text)
            } catch {
                throw .stateFile(path: path, reason: "\(error); fix it, or delete it to start as a new producer")
            }
        }
        let state = ProducerState(producer: .random(), nextSeq: 1)
        try write(state, to: path)
        return state
    }

    /// Takes `flock(LOCK_EX | LOCK_NB)` on `<path>.lock` (once per process) and writes our PID into it.
    public static func lock(_ path: String) throws(ClientError) {
        let lockPath = URL(fileURLWithPath: path).standardizedFileURL.path + ".lock"
        try FileLock.acquire(
            lockPath,
            error: { .stateFile(path: path, reason: $0) },
            busy: { holder in
                .stateFile(
                    path: path,
                    reason: "\(holder) is using it (it holds \(lockPath)): two producers cannot share one identity; "
                        + "give each its own --state-file, or wait until that one exits")
            })
    }

    /// Replaces the file atomically (write a temporary file, fsync, rename).
    public static func write(_ state: ProducerState, to path: String) throws(ClientError) {
        let temporary = path + ".tmp"
        let bytes = Array(state.encoded().utf8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw .stateFile(path: path, reason: "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0 else {
            throw .stateFile(path: path, reason: "cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        guard rename(temporary, path) == 0 else {
            throw .stateFile(path: path, reason: "cannot rename \(temporary) over it: \(String(cString: strerror(errno)))")
        }
    }
}

/// Hands out strictly increasing seqs, asking for the state file to be extended before one past the
/// persisted reservation is used.
public struct SeqAllocator: Sendable, Equatable {
    /// The next seq to hand out.
    public private(set) var next: UInt64
    /// Seqs below this are covered by the persisted file (`UInt64.max` when there is no file).
    public private(set) var reservedBelow: UInt64
    /// How many seqs one file write reserves.
    public let blockSize: UInt64

    public init(next: UInt64, persisted: Bool, blockSize: UInt64 = 4096) {
        self.next = max(next, 1)
        self.reservedBelow = persisted ? self.next : .max
        self.blockSize = blockSize
    }

    /// True when the next seq may be used without writing the file first.
    public var canAllocate: Bool { next < reservedBelow }

    /// Seqs usable before the file must be written again.
    public var available: UInt64 { reservedBelow > next ? reservedBelow - next : 0 }

    /// The `next_seq` to persist before more seqs can be used.
    public var nextReservation: UInt64 { next + blockSize }

    /// Records that the file now says `upTo`.
    public mutating func reserved(upTo: UInt64) { reservedBelow = max(reservedBelow, upTo) }

    /// Takes the next seq. Precondition: `canAllocate`.
    public mutating func allocate() -> UInt64 {
        precondition(canAllocate, "seq \(next) used before it was persisted")
        defer { next += 1 }
        return next
    }

    /// The server has committed up to `seq`: never hand out anything at or below it (a producer that lost
    /// its state would otherwise have new batches deduplicated away).
    public mutating func skip(through seq: UInt64) {
        guard seq >= next else { return }
        next = seq + 1
    }
}
