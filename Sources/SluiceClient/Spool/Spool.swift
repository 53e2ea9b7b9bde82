import Foundation
import Synchronization

/// A batch held in the spool: where it is, so it can be read back when there is room to send it.
public struct SpoolEntry: Sendable, Equatable {
    public var seq: UInt64
    public var readings: Int
    /// Bytes of the frame (the record's payload).
    public var frameBytes: Int
    var segment: Int
    var offset: Int
}

/// What opening a spool found in it.
public struct SpoolRecovery: Sendable {
    public var batches = 0
    public var readings = 0
    public var segments = 0
    public var bytes = 0
    /// The input position the spool had taken up to (lines, for `sluice send`).
    public var inputPosition: UInt64 = 0
    public var problems: [SpoolProblem] = []
    public var duration: Duration = .zero
}

/// The segment files of one producer's spool. Every method does blocking file I/O: call them only from a
/// thread that may block (the client uses NIO's thread pool), never from the cooperative pool or an event
/// loop. The counters a client needs in between are atomics, so reading them never waits for an fsync.
///
/// Layout of the directory: `lock` (flock'd by the process using the spool, holding its PID),
/// `producer.json` (identity + seq reservation, as `ProducerStateFile` writes it), `position` (input position
/// once the segments that held it are deleted), and `NNNNNNNNNNNN.seg` segment files of `SpoolRecord`s.
public final class Spool: Sendable {
    public let directory: String
    public let configuration: SpoolConfiguration
    /// Bytes of segment files on disk.
    public let bytesOnDisk = Atomic<Int>(0)

    private struct Segment {
        var bytes: Int
        var live: Int
        var maxPosition: UInt64
    }

    private struct State {
        var segments: [Int: Segment] = [:]
        var seqSegment: [UInt64: Int] = [:]
        var active: (number: Int, fd: Int32)?
        var nextSegment = 1
        var persistedPosition: UInt64 = 0
        var dirty = false
    }

    private let state: Mutex<State>

    private init(directory: String, configuration: SpoolConfiguration, state: State) {
        self.directory = directory
        self.configuration = configuration
        self.state = Mutex(state)
    }

    deinit {
        state.withLock { s in
            if let active = s.active { _ = Foundation.close(active.fd) }
        }
    }

    /// Opens (or creates) the spool: takes its lock, loads or creates the producer identity (from `seed`, the
    /// old `--state-file`, when the spool is new), and recovers what the segments hold, oldest seq first.
    public static func open(
        _ configuration: SpoolConfiguration, seed: ProducerState? = nil
    ) throws(ClientError) -> (spool: Spool, producer: ProducerState, entries: [SpoolEntry], recovery: SpoolRecovery) {
        let started = ContinuousClock.now
        let directory = URL(fileURLWithPath: configuration.directory).standardizedFileURL.path
        func fail(_ reason: String) -> ClientError { .spool(directory: directory, reason: reason) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw fail("cannot create it: \(error.localizedDescription)")
        }
        try FileLock.acquire(
            directory + "/lock",
            error: { fail($0) },
            busy: { holder in
                fail("\(holder) is using this spool: one process per spool (it holds \(directory)/lock); give each sender its own --spool directory, or wait until that one exits")
            })
        let producerPath = directory + "/producer.json"
        if let seed, !FileManager.default.fileExists(atPath: producerPath) {
            try ProducerStateFile.write(seed, to: producerPath)
        }
        var producer = try ProducerStateFile.loadOrCreate(path: producerPath)

        let scanned: SpoolScanner.Result
        do {
            scanned = try SpoolScanner.scan(directory: directory, repair: true)
        } catch {
            throw fail("cannot read it: \(error.localizedDescription)")
        }
        var recovery = SpoolRecovery()
        recovery.problems = scanned.problems
        var located = scanned.records.sorted { $0.record.seq < $1.record.seq }
        // Records after the last group end belong to an append that never returned: not taken, so not kept.
        if let lastEnd = located.lastIndex(where: { $0.record.isGroupEnd }) {
            let dropped = located[(lastEnd + 1)...]
            if !dropped.isEmpty {
                recovery.problems.append(.incompleteAppend(batches: dropped.count, readings: dropped.reduce(0) { $0 + $1.record.readings }))
            }
            located.removeSubrange((lastEnd + 1)...)
        } else if !located.isEmpty {
            recovery.problems.append(.incompleteAppend(batches: located.count, readings: located.reduce(0) { $0 + $1.record.readings }))
            located.removeAll()
        }
        var s = State()
        s.persistedPosition = readPosition(directory + "/position")
        for (number, bytes) in scanned.segmentBytes {
            s.segments[number] = Segment(bytes: bytes, live: 0, maxPosition: 0)
            s.nextSegment = max(s.nextSegment, number + 1)
        }
        var entries: [SpoolEntry] = []
        var maxSeq: UInt64 = 0
        var position = s.persistedPosition
        for l in located {
            let r = l.record
            guard s.seqSegment[r.seq] == nil else { continue }  // the same seq twice: a copy; the first is kept
            s.seqSegment[r.seq] = l.segment
            s.segments[l.segment, default: Segment(bytes: 0, live: 0, maxPosition: 0)].live += 1
            if r.isGroupEnd {
                s.segments[l.segment]!.maxPosition = max(s.segments[l.segment]!.maxPosition, r.inputPosition)
                position = max(position, r.inputPosition)
            }
            maxSeq = max(maxSeq, r.seq)
            entries.append(SpoolEntry(seq: r.seq, readings: r.readings, frameBytes: r.payload.count, segment: l.segment, offset: l.offset))
            recovery.readings += r.readings
        }
        // Segments with nothing live (acknowledged before a crash deleted them, or torn to nothing) go now.
        for (number, segment) in s.segments where segment.live == 0 {
            if segment.maxPosition > s.persistedPosition { s.persistedPosition = segment.maxPosition }
            unlink(directory + "/" + SpoolScanner.segmentName(number))
            s.segments[number] = nil
        }
        if maxSeq >= producer.nextSeq {
            producer.nextSeq = maxSeq + 1
            try ProducerStateFile.write(producer, to: producerPath)
        }
        recovery.batches = entries.count
        recovery.segments = s.segments.count
        recovery.bytes = s.segments.values.reduce(0) { $0 + $1.bytes }
        recovery.inputPosition = position
        recovery.duration = ContinuousClock.now - started
        let spool = Spool(directory: directory, configuration: configuration, state: s)
        spool.bytesOnDisk.store(recovery.bytes, ordering: .relaxed)
        return (spool, producer, entries, recovery)
    }

    /// One batch to append: its seq (already reserved in `producer.json`), readings and wire frame.
    public struct Batch: Sendable {
        public var seq: UInt64
        public var readings: Int
        public var frame: [UInt8]

        public init(seq: UInt64, readings: Int, frame: [UInt8]) {
            self.seq = seq
            self.readings = readings
            self.frame = frame
        }
    }

    /// Appends `batches` as one group (taken together or not at all), its last record carrying the input
    /// position after them; fsyncs first if the policy is `always`. Returns where each landed.
    public func append(_ batches: [Batch], inputPosition: UInt64) throws(ClientError) -> [SpoolEntry] {
        guard !batches.isEmpty else { return [] }
        let result: Result<[SpoolEntry], ClientError> = state.withLock { s in
            do throws(ClientError) {
                if let active = s.active, (s.segments[active.number]?.bytes ?? 0) >= configuration.segmentBytes {
                    try closeActive(&s)
                }
                if s.active == nil { try openSegment(&s) }
                let active = s.active!
                var bytes: [UInt8] = []
                bytes.reserveCapacity(batches.reduce(0) { $0 + $1.frame.count + SpoolRecord.headerBytes })
                var entries: [SpoolEntry] = []
                let base = s.segments[active.number]!.bytes
                for (i, b) in batches.enumerated() {
                    let last = i == batches.count - 1
                    let record = SpoolRecord(
                        seq: b.seq, readings: b.readings, flags: last ? SpoolRecord.flagGroupEnd : 0,
                        inputPosition: last ? inputPosition : 0, payload: b.frame)
                    entries.append(
                        SpoolEntry(seq: b.seq, readings: b.readings, frameBytes: b.frame.count, segment: active.number, offset: base + bytes.count))
                    record.encode(into: &bytes)
                }
                try writeAll(active.fd, bytes)
                if configuration.fsync == .always {
                    guard fsync(active.fd) == 0 else { throw error("cannot fsync \(SpoolScanner.segmentName(active.number))") }
                } else {
                    s.dirty = true
                }
                s.segments[active.number]!.bytes += bytes.count
                s.segments[active.number]!.live += batches.count
                s.segments[active.number]!.maxPosition = max(s.segments[active.number]!.maxPosition, inputPosition)
                for b in batches { s.seqSegment[b.seq] = active.number }
                bytesOnDisk.add(bytes.count, ordering: .relaxed)
                return .success(entries)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// fsyncs the segment being written if anything was appended since the last sync (the `interval` policy's
    /// timer calls this).
    public func sync() throws(ClientError) {
        let failed: Bool = state.withLock { s in
            guard s.dirty, let active = s.active else { return false }
            s.dirty = false
            return fsync(active.fd) != 0
        }
        if failed { throw error("cannot fsync the active segment") }
    }

    /// Reads a batch's frame back (it was spooled while the in-memory window was full, or by an earlier run).
    /// Nil if its record no longer checks out (the disk changed under it): the caller counts it as lost.
    public func read(_ entry: SpoolEntry) -> [UInt8]? {
        let path = directory + "/" + SpoolScanner.segmentName(entry.segment)
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = Foundation.close(fd) }
        let length = SpoolRecord.headerBytes + entry.frameBytes
        var bytes = [UInt8](repeating: 0, count: length)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(entry.offset)) }
        guard n == length, case .record(let record, _) = SpoolRecord.decode(bytes, at: 0), record.seq == entry.seq else {
            return nil
        }
        return record.payload
    }

    /// The batches with these seqs were acknowledged (or rejected whole, or dropped): they need not be
    /// resent. Deletes every segment left with nothing to resend. Returns the bytes freed.
    @discardableResult
    public func release(_ seqs: [UInt64]) -> Int {
        state.withLock { s in
            var emptied: [Int] = []
            for seq in seqs {
                guard let number = s.seqSegment.removeValue(forKey: seq) else { continue }
                s.segments[number]!.live -= 1
                if s.segments[number]!.live == 0 { emptied.append(number) }
            }
            return emptied.reduce(0) { $0 + delete($1, &s) }
        }
    }

    /// The oldest segment's batches still to be resent, for the drop-oldest policy; `release` them to free it.
    public func oldestSegmentSeqs() -> [UInt64] {
        state.withLock { s in
            guard let oldest = s.segments.keys.min() else { return [] }
            return s.seqSegment.filter { $0.value == oldest }.map(\.key).sorted()
        }
    }

    private func delete(_ number: Int, _ s: inout State) -> Int {
        guard let segment = s.segments[number] else { return 0 }
        if s.active?.number == number {
            _ = Foundation.close(s.active!.fd)
            s.active = nil
            s.dirty = false
        }
        // The newest input position must outlive the segment that held it: a restart with an empty spool
        // still has to know where the input was taken to.
        if segment.maxPosition > s.persistedPosition {
            if Self.writePosition(segment.maxPosition, to: directory + "/position") { s.persistedPosition = segment.maxPosition }
        }
        unlink(directory + "/" + SpoolScanner.segmentName(number))
        s.segments[number] = nil
        bytesOnDisk.subtract(segment.bytes, ordering: .relaxed)
        return segment.bytes
    }

    private func openSegment(_ s: inout State) throws(ClientError) {
        let number = s.nextSegment
        let path = directory + "/" + SpoolScanner.segmentName(number)
        let fd = Foundation.open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw error("cannot create \(path)") }
        s.nextSegment += 1
        s.active = (number, fd)
        s.segments[number] = Segment(bytes: 0, live: 0, maxPosition: 0)
        // The new file's directory entry must be durable too, or fsyncing the file alone can lose it.
        if configuration.fsync == .always { syncDirectory() }
    }

    private func closeActive(_ s: inout State) throws(ClientError) {
        guard let active = s.active else { return }
        if s.dirty, fsync(active.fd) != 0 { throw error("cannot fsync \(SpoolScanner.segmentName(active.number))") }
        s.dirty = false
        _ = Foundation.close(active.fd)
        s.active = nil
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(ClientError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw error("cannot write a segment")
            }
            done += n
        }
    }

    private func syncDirectory() {
        let fd = Foundation.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        _ = Foundation.close(fd)
    }

    private func error(_ what: String) -> ClientError {
        .spool(directory: directory, reason: "\(what): \(String(cString: strerror(errno)))")
    }

    static func readPosition(_ path: String) -> UInt64 {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return 0 }
        return UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Atomically, by rename after fsync: a crash leaves the old position or the new one.
    static func writePosition(_ position: UInt64, to path: String) -> Bool {
        let temporary = path + ".tmp"
        let bytes = Array("\(position)\n".utf8)
        let fd = Foundation.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        _ = Foundation.close(fd)
        return written == bytes.count && synced == 0 && rename(temporary, path) == 0
    }
}
