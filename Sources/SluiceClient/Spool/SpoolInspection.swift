import Foundation

/// What a spool directory holds, read without taking its lock or changing a byte (`sluice spool inspect`),
/// so it can be looked at while a sender is using it.
public struct SpoolInspection: Sendable {
    public struct SegmentSummary: Sendable {
        public var name: String
        public var bytes: Int
        public var batches: Int
        public var readings: Int
        public var firstSeq: UInt64?
        public var lastSeq: UInt64?
    }

    public var directory: String
    public var producer: ProducerState?
    /// The PID of the process using the spool now, if any.
    public var lockedBy: Int?
    public var segments: [SegmentSummary] = []
    /// Input position taken up to (lines, for `sluice send`): where a restarted sender's input must begin.
    public var inputPosition: UInt64 = 0
    public var problems: [SpoolProblem] = []

    public var batches: Int { segments.reduce(0) { $0 + $1.batches } }
    public var readings: Int { segments.reduce(0) { $0 + $1.readings } }
    public var bytes: Int { segments.reduce(0) { $0 + $1.bytes } }

    /// Blocking file I/O: call from a thread that may block.
    public static func inspect(directory: String) throws(ClientError) -> SpoolInspection {
        let directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .spool(directory: directory, reason: "no such directory")
        }
        var result = SpoolInspection(directory: directory)
        if let text = try? String(contentsOfFile: directory + "/producer.json", encoding: .utf8) {
            result.producer = try? ProducerState.decode(text)
        }
        result.lockedBy = FileLock.holder(ofLockedFile: directory + "/lock")
        let scanned: SpoolScanner.Result
        do {
            scanned = try SpoolScanner.scan(directory: directory, repair: false)
        } catch {
            throw .spool(directory: directory, reason: "cannot read it: \(error.localizedDescription)")
        }
        result.problems = scanned.problems
        result.inputPosition = Spool.readPosition(directory + "/position")
        var bySegment: [Int: SegmentSummary] = [:]
        for (number, bytes) in scanned.segmentBytes {
            bySegment[number] = SegmentSummary(name: SpoolScanner.segmentName(number), bytes: bytes, batches: 0, readings: 0)
        }
        for l in scanned.records {
            let r = l.record
            bySegment[l.segment]!.batches += 1
            bySegment[l.segment]!.readings += r.readings
            bySegment[l.segment]!.firstSeq = min(bySegment[l.segment]!.firstSeq ?? .max, r.seq)
            bySegment[l.segment]!.lastSeq = max(bySegment[l.segment]!.lastSeq ?? 0, r.seq)
            if r.isGroupEnd { result.inputPosition = max(result.inputPosition, r.inputPosition) }
        }
        result.segments = bySegment.keys.sorted().map { bySegment[$0]! }
        return result
    }
}
