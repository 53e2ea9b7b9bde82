import Foundation
import Testing

@testable import SluiceClient

/// The spool's files: what a crash, a torn write or a bad sector leaves, and what recovery keeps of it.
@Suite struct SpoolTests {
    func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "sluice-spool-\(UUID().uuidString)"
    }

    func frame(_ seq: UInt64, bytes: Int = 100) -> [UInt8] {
        (0..<bytes).map { UInt8(truncatingIfNeeded: Int(seq) &* 31 &+ $0) }
    }

    func batch(_ seq: UInt64, bytes: Int = 100) -> Spool.Batch {
        Spool.Batch(seq: seq, readings: 10, frame: frame(seq, bytes: bytes))
    }

    func segmentPaths(_ directory: String) throws -> [String] {
        try SpoolScanner.segments(in: directory).map { directory + "/" + SpoolScanner.segmentName($0) }
    }

    @Test func spooledBatchesComeBackInSeqOrderWithTheirFramesAndInputPosition() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SpoolConfiguration(directory: dir)
        let first = try Spool.open(config)
        #expect(first.entries.isEmpty && first.recovery.problems.isEmpty)
        _ = try first.spool.append([batch(1), batch(2)], inputPosition: 20)
        _ = try first.spool.append([batch(3)], inputPosition: 31)
        let again = try Spool.open(config)
        #expect(again.producer.producer == first.producer.producer)
        #expect(again.entries.map(\.seq) == [1, 2, 3])
        #expect(again.recovery.inputPosition == 31)
        #expect(again.recovery.readings == 30)
        #expect(again.producer.nextSeq >= 4, "a restart never reuses a spooled seq")
        for entry in again.entries { #expect(again.spool.read(entry) == frame(entry.seq)) }
        #expect(again.recovery.problems.isEmpty)
    }

    @Test func aTornLastRecordIsReportedAndDroppedAndTheRestKept() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SpoolConfiguration(directory: dir)
        let opened = try Spool.open(config)
        for seq in UInt64(1)...3 { _ = try opened.spool.append([batch(seq)], inputPosition: seq * 10) }
        let path = try #require(try segmentPaths(dir).last)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(truncate(path, off_t(size - 7)) == 0)  // the crash cut the last append short

        let recovered = try Spool.open(config)
        #expect(recovered.entries.map(\.seq) == [1, 2])
        #expect(recovered.recovery.inputPosition == 20, "the torn append was never taken, so the input resumes before it")
        #expect(recovered.recovery.problems.count == 1)
        guard case .tornTail(_, let offset, _) = recovered.recovery.problems.first else {
            Issue.record("expected a torn tail, got \(recovered.recovery.problems)")
            return
        }
        #expect(offset == 2 * (SpoolRecord.headerBytes + 100))
        print("spool: torn tail recovered in \(recovered.recovery.duration): \(recovered.recovery.problems[0])")
        // Repaired: the next opening finds a clean spool and can append after it.
        let clean = try Spool.open(config)
        #expect(clean.recovery.problems.isEmpty && clean.entries.map(\.seq) == [1, 2])
    }

    @Test func aCorruptedSegmentIsReportedAndItsOtherRecordsAndSegmentsAreKept() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 64 KiB → 16 KiB segments: two 10 KiB batches per segment.
        let config = SpoolConfiguration(directory: dir, maxBytes: 256 << 10)
        let opened = try Spool.open(config)
        for seq in UInt64(1)...6 { _ = try opened.spool.append([batch(seq, bytes: 10_000)], inputPosition: seq) }
        let segments = try segmentPaths(dir)
        #expect(segments.count == 3)
        // A bad sector in the first segment's second record: one payload byte flipped.
        let handle = try #require(FileHandle(forUpdatingAtPath: segments[0]))
        let offset = UInt64(SpoolRecord.headerBytes + 10_000 + SpoolRecord.headerBytes + 500)
        try handle.seek(toOffset: offset)
        let byte = try #require(try handle.read(upToCount: 1)).first!
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: [byte ^ 0xFF])
        try handle.close()

        let inspection = try SpoolInspection.inspect(directory: dir)
        #expect(inspection.problems.count == 1, "inspect reports it without changing anything")

        let recovered = try Spool.open(config)
        #expect(recovered.entries.map(\.seq) == [1, 3, 4, 5, 6])
        #expect(recovered.recovery.problems.count == 1)
        guard case .corrupt(let segment, _, let skipped, let reason) = recovered.recovery.problems.first else {
            Issue.record("expected corruption, got \(recovered.recovery.problems)")
            return
        }
        #expect(segment == 1 && skipped == SpoolRecord.headerBytes + 10_000 && reason == "checksum mismatch")
        print("spool: corrupted segment recovered in \(recovered.recovery.duration): \(recovered.recovery.problems[0])")
        for entry in recovered.entries { #expect(recovered.spool.read(entry) == frame(entry.seq, bytes: 10_000)) }
    }

    @Test func anAppendCutShortLosesAllOfItsBatchesAndNoneOfTheOthers() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SpoolConfiguration(directory: dir)
        let opened = try Spool.open(config)
        _ = try opened.spool.append([batch(1)], inputPosition: 10)
        _ = try opened.spool.append([batch(2), batch(3), batch(4)], inputPosition: 40)
        let path = try #require(try segmentPaths(dir).last)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(truncate(path, off_t(size - 50)) == 0)  // the group's last record is torn; its first two are whole

        let recovered = try Spool.open(config)
        #expect(recovered.entries.map(\.seq) == [1])
        #expect(recovered.recovery.inputPosition == 10)
        #expect(recovered.recovery.problems.contains(.incompleteAppend(batches: 2, readings: 20)))
        #expect(recovered.recovery.problems.contains { if case .tornTail = $0 { true } else { false } })
    }

    @Test func acknowledgedSegmentsAreDeletedAndTheInputPositionOutlivesThem() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SpoolConfiguration(directory: dir, maxBytes: 256 << 10)
        let opened = try Spool.open(config)
        for seq in UInt64(1)...5 { _ = try opened.spool.append([batch(seq, bytes: 10_000)], inputPosition: seq * 100) }
        #expect(opened.spool.bytesOnDisk.load(ordering: .relaxed) == 5 * (SpoolRecord.headerBytes + 10_000))
        opened.spool.release([1])
        #expect(try segmentPaths(dir).count == 3, "a segment leaves only when all of it is acknowledged")
        opened.spool.release([2, 3, 4, 5])
        #expect(try segmentPaths(dir).isEmpty)
        #expect(opened.spool.bytesOnDisk.load(ordering: .relaxed) == 0)
        let again = try Spool.open(config)
        #expect(again.entries.isEmpty)
        #expect(again.recovery.inputPosition == 500)
        // (The seqs outlive them in producer.json, which the client extends before it uses a seq.)
    }

    @Test func dropOldestFindsTheOldestSegmentsBatches() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = SpoolConfiguration(directory: dir, maxBytes: 256 << 10, whenFull: .dropOldest)
        let opened = try Spool.open(config)
        for seq in UInt64(1)...4 { _ = try opened.spool.append([batch(seq, bytes: 10_000)], inputPosition: seq) }
        #expect(opened.spool.oldestSegmentSeqs() == [1, 2])
        #expect(opened.spool.release([1, 2]) == 2 * (SpoolRecord.headerBytes + 10_000))
        #expect(opened.spool.oldestSegmentSeqs() == [3, 4])
    }

    @Test func aNewSpoolTakesTheStateFilesIdentity() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seed = ProducerState(producer: .random(), nextSeq: 77)
        let opened = try Spool.open(SpoolConfiguration(directory: dir), seed: seed)
        #expect(opened.producer == seed)
    }

    @Test func aRecordChecksOutOnlyWhole() {
        var bytes: [UInt8] = []
        let record = SpoolRecord(seq: 9, readings: 3, flags: SpoolRecord.flagGroupEnd, inputPosition: 12, payload: [1, 2, 3])
        record.encode(into: &bytes)
        #expect(SpoolRecord.decode(bytes, at: 0) == .record(record, next: bytes.count))
        #expect(SpoolRecord.decode(Array(bytes.dropLast()), at: 0) == .truncated)
        var flipped = bytes
        flipped[10] ^= 1
        #expect(SpoolRecord.decode(flipped, at: 0) == .invalid("checksum mismatch"))
    }
}
