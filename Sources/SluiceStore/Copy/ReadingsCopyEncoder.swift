/// Encodes `RowSeries` straight from their columns into binary COPY rows for `readings`.
///
/// The COPY names the columns that are constant within a series first
/// (`device_id, metric, site, unit, enrichment_partial`), so that part of every row — field count included —
/// is encoded once per series and copied with one memcpy per row; the per-row work is then three fixed-size
/// big-endian stores. Nothing is allocated per reading. Not Sendable: one per writer thread.
final class ReadingsCopyEncoder {
    /// The COPY statement whose column order the rows follow.
    static let copyStatement =
        "COPY readings (device_id, metric, site, unit, enrichment_partial, time, value, quality) "
        + "FROM STDIN (FORMAT binary)"

    static let fieldCount: Int16 = 8
    /// time, value and quality: three (int32 length + payload) fields.
    static let variablePartSize = (4 + 8) + (4 + 8) + (4 + 4)

    /// The series-constant leading part of each row, reused between series.
    private let prefix = CopyBuffer(capacity: 512)

    init() {}

    /// Appends the rows `rows` (all when nil) of `series` to `buffer`, calling `flush` whenever the buffer
    /// holds at least `flushThreshold` bytes (flush must send and empty it). The series' columns must have
    /// equal lengths (quality may be empty); `WriteBatch.structuralProblem` is checked before anything is queued.
    func encode(
        _ series: RowSeries, rows: Range<Int>? = nil, into buffer: CopyBuffer, flushThreshold: Int,
        flush: (CopyBuffer) throws -> Void
    ) rethrows {
        prefix.removeAll()
        prefix.append(int16: Self.fieldCount)
        CopyBinaryFormat.appendText(series.deviceID, to: prefix)
        CopyBinaryFormat.appendText(series.metric, to: prefix)
        CopyBinaryFormat.appendText(series.site, to: prefix)
        CopyBinaryFormat.appendText(series.unit, to: prefix)
        prefix.append(int32: 1)
        prefix.reserve(1)
        prefix.base.advanced(by: prefix.count).storeBytes(of: series.enrichmentPartial ? 1 : 0, as: UInt8.self)
        prefix.count += 1

        let prefixBase = UnsafeRawPointer(prefix.base)
        let prefixSize = prefix.count
        let rowSize = prefixSize + Self.variablePartSize
        let rowCount = series.times.count
        precondition(series.values.count == rowCount, "series columns differ in length (checked at submit)")
        let range = rows ?? 0..<rowCount
        precondition(range.lowerBound >= 0 && range.upperBound <= rowCount, "rows \(range) outside the series")
        let hasQuality = !series.quality.isEmpty

        try series.times.withUnsafeBufferPointer { times in
            try series.values.withUnsafeBufferPointer { values in
                try series.quality.withUnsafeBufferPointer { quality in
                    var row = range.lowerBound
                    while row < range.upperBound {
                        if buffer.count >= flushThreshold { try flush(buffer) }
                        let fitting = max(1, (flushThreshold - buffer.count) / rowSize)
                        let end = min(range.upperBound, row + fitting)
                        buffer.reserve((end - row) * rowSize)
                        var out = buffer.base + buffer.count
                        for index in row..<end {
                            out.copyMemory(from: prefixBase, byteCount: prefixSize)
                            out += prefixSize
                            out.storeBytes(of: Int32(8).bigEndian, as: Int32.self)
                            out.storeBytes(
                                of: CopyBinaryFormat.postgresTime(unixMicros: times[index]).bigEndian,
                                toByteOffset: 4, as: Int64.self)
                            out.storeBytes(of: Int32(8).bigEndian, toByteOffset: 12, as: Int32.self)
                            out.storeBytes(of: values[index].bitPattern.bigEndian, toByteOffset: 16, as: UInt64.self)
                            out.storeBytes(of: Int32(4).bigEndian, toByteOffset: 24, as: Int32.self)
                            out.storeBytes(
                                of: (hasQuality ? quality[index] : 0).bigEndian, toByteOffset: 28, as: UInt32.self)
                            out += Self.variablePartSize
                        }
                        buffer.count = buffer.base.distance(to: out)
                        row = end
                    }
                }
            }
        }
    }
}

/// Encodes dead letters as binary COPY rows for `dead_letters` (rare, so simplicity over speed; the writer
/// streams them in chunks like readings, so a group's dead letters never need one buffer of their own).
enum DeadLetterCopyEncoder {
    static let copyStatement =
        "COPY dead_letters (producer_id, seq, device_id, metric, time_us, value, quality, reason_code, reason) "
        + "FROM STDIN (FORMAT binary)"

    /// Appends the row of one dead letter of batch `seq` of `producer`. Device id and metric over 64 bytes
    /// are stored as prefix + length + hash, reasons cut to 2,000 bytes, NULs replaced (`DeadLetterText`).
    static func encode(_ letter: DeadLetter, producer: ProducerID, seq: UInt64, into buffer: CopyBuffer) {
        buffer.append(int16: 9)
        buffer.append(int32: 16)
        buffer.append(bytes: producer.bytes)
        buffer.append(int32: 8)
        buffer.append(int64: Int64(bitPattern: seq))
        CopyBinaryFormat.appendText(DeadLetterText.identifier(letter.deviceID), to: buffer)
        CopyBinaryFormat.appendText(DeadLetterText.identifier(letter.metric), to: buffer)
        buffer.append(int32: 8)
        buffer.append(int64: letter.timeMicros)  // raw, as received: it may be out of any range
        buffer.append(int32: 8)
        buffer.append(int64: Int64(bitPattern: letter.value.bitPattern))
        buffer.append(int32: 4)
        buffer.append(int32: Int32(bitPattern: letter.quality))
        buffer.append(int32: 4)
        buffer.append(int32: letter.reasonCode)
        CopyBinaryFormat.appendText(DeadLetterText.reason(letter.reason), to: buffer)
    }

    /// Every dead letter of `batch` (tests and benchmarks; the writer encodes row by row).
    static func encode(_ batch: WriteBatch, into buffer: CopyBuffer) {
        for letter in batch.deadLetters { encode(letter, producer: batch.producer, seq: batch.seq, into: buffer) }
    }
}
