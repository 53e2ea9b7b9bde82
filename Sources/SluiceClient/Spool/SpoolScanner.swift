import Foundation

/// Reads a spool's segment files back: every record whose checksum holds, and what was wrong with the rest.
///
/// A record cut short at the end of a segment is a torn tail (a crash in the middle of an append): it was
/// never acknowledged to the caller, so it is dropped (and, when repairing, truncated away). Bytes that are
/// there but do not check out are corruption: the scanner skips forward to the next record that does, so one
/// bad sector costs the batches in it, not the segment.
struct SpoolScanner {
    struct Located: Sendable {
        var record: SpoolRecord
        var segment: Int
        var offset: Int
    }

    struct Result: Sendable {
        var records: [Located] = []
        /// segment → bytes; the bytes are what each file holds after any repair.
        var segmentBytes: [Int: Int] = [:]
        var problems: [SpoolProblem] = []
    }

    static let segmentSuffix = ".seg"

    static func segmentName(_ number: Int) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 12 - digits.count)) + digits + segmentSuffix
    }

    /// Segment numbers in the directory, oldest first.
    static func segments(in directory: String) throws -> [Int] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return names.compactMap { name in
            guard name.hasSuffix(segmentSuffix) else { return nil }
            return Int(name.dropLast(segmentSuffix.count))
        }.sorted()
    }

    /// Scans every segment. With `repair`, a torn tail is truncated so that the next scan is clean.
    static func scan(directory: String, repair: Bool) throws -> Result {
        var result = Result()
        let numbers = try segments(in: directory)
        for number in numbers {
            // Appends go only to the newest segment, so only there can a crash leave a torn tail; anywhere
            // else a bad record is corruption.
            let newest = number == numbers.last
            let path = directory + "/" + segmentName(number)
            guard let data = FileManager.default.contents(atPath: path) else {
                result.problems.append(.unreadable(segment: number, reason: "cannot read \(path)"))
                continue
            }
            let bytes = [UInt8](data)
            var offset = 0
            var size = bytes.count
            while offset < bytes.count {
                switch SpoolRecord.decode(bytes, at: offset) {
                case .record(let record, let next):
                    result.records.append(Located(record: record, segment: number, offset: offset))
                    offset = next
                case .truncated:
                    result.problems.append(.tornTail(segment: number, offset: offset, bytes: bytes.count - offset))
                    if repair, truncate(path, offset) == 0 { size = offset }
                    offset = bytes.count
                case .invalid(let why):
                    let resume = nextRecord(in: bytes, after: offset)
                    if resume == nil, newest, isTornTail(bytes, at: offset) {
                        result.problems.append(.tornTail(segment: number, offset: offset, bytes: bytes.count - offset))
                        if repair, truncate(path, offset) == 0 { size = offset }
                    } else {
                        let end = resume ?? bytes.count
                        result.problems.append(.corrupt(segment: number, offset: offset, skippedBytes: end - offset, reason: why))
                    }
                    offset = resume ?? bytes.count
                }
            }
            result.segmentBytes[number] = size
        }
        return result
    }

    /// The next offset after `offset` where a whole record checks out.
    private static func nextRecord(in bytes: [UInt8], after offset: Int) -> Int? {
        var i = offset + 1
        while i + SpoolRecord.headerBytes <= bytes.count {
            if bytes[i] == SpoolRecord.magic[0], case .record = SpoolRecord.decode(bytes, at: i) { return i }
            i += 1
        }
        return nil
    }

    /// A bad record with nothing good after it, whose declared length runs to or past the end of the file, or
    /// whose bytes after a valid header are zeros: what a crash in the middle of an append leaves.
    private static func isTornTail(_ bytes: [UInt8], at offset: Int) -> Bool {
        guard bytes.count - offset >= 8, bytes[offset..<offset + 4].elementsEqual(SpoolRecord.magic) else {
            return bytes[offset...].allSatisfy { $0 == 0 }
        }
        let length = Int(bytes.readLE(UInt32.self, at: offset + 4))
        return offset + SpoolRecord.headerBytes + length >= bytes.count
    }
}

/// Something recovery found wrong in a spool, and what it cost.
public enum SpoolProblem: Sendable, Equatable, CustomStringConvertible {
    /// The last append to this segment was cut short (a crash while writing): never acknowledged, dropped.
    case tornTail(segment: Int, offset: Int, bytes: Int)
    /// Bytes that fail their checksum; the records in them are lost, the segment's other records kept.
    case corrupt(segment: Int, offset: Int, skippedBytes: Int, reason: String)
    case unreadable(segment: Int, reason: String)
    /// Batches of an append whose last record is missing: the append never completed, so none of it counts.
    case incompleteAppend(batches: Int, readings: Int)

    public var description: String {
        switch self {
        case .tornTail(let segment, let offset, let bytes):
            "segment \(SpoolScanner.segmentName(segment)): torn tail at byte \(offset) (\(bytes) bytes of an append cut short by a crash; it was never confirmed, so nothing taken is lost)"
        case .corrupt(let segment, let offset, let skipped, let reason):
            "segment \(SpoolScanner.segmentName(segment)): corrupt at byte \(offset) (\(reason)): \(skipped) bytes skipped, the batches in them are lost; the rest of the segment is kept"
        case .unreadable(let segment, let reason):
            "segment \(SpoolScanner.segmentName(segment)): \(reason)"
        case .incompleteAppend(let batches, let readings):
            "\(batches) batches (\(readings) readings) of an append that did not complete were discarded (never confirmed as taken)"
        }
    }
}
