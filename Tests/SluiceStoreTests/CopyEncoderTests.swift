import Testing

@testable import SluiceStore

/// The binary COPY bytes, checked against the format PostgreSQL documents (no database needed).
@Suite struct CopyEncoderTests {
    private func encode(_ series: RowSeries, flushThreshold: Int = 1 << 20) -> [UInt8] {
        let buffer = CopyBuffer(capacity: 64)
        var flushed: [UInt8] = []
        ReadingsCopyEncoder().encode(series, into: buffer, flushThreshold: flushThreshold) { full in
            flushed += Array(full.bytes)
            full.removeAll()
        }
        return flushed + Array(buffer.bytes)
    }

    @Test func theHeaderIsTheSignatureThenZeroFlagsAndNoExtension() {
        #expect(
            CopyBinaryFormat.header == [
                0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
            ])
        #expect(CopyBinaryFormat.trailer == [0xFF, 0xFF])
    }

    @Test func oneRowIsEncodedFieldByFieldInTheCopyColumnOrder() {
        let series = RowSeries(
            deviceID: "d", metric: "m", times: [946_684_800_000_001], values: [1.5], quality: [7], site: nil,
            unit: "u", enrichmentPartial: true)
        let expected: [UInt8] =
            [0x00, 0x08]  // 8 fields
            + [0, 0, 0, 1, 0x64]  // device_id "d"
            + [0, 0, 0, 1, 0x6D]  // metric "m"
            + [0xFF, 0xFF, 0xFF, 0xFF]  // site NULL
            + [0, 0, 0, 1, 0x75]  // unit "u"
            + [0, 0, 0, 1, 0x01]  // enrichment_partial true
            + [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]  // time: 1 µs after 2000-01-01
            + [0, 0, 0, 8, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0]  // value 1.5
            + [0, 0, 0, 4, 0, 0, 0, 7]  // quality 7
        #expect(encode(series) == expected)
        #expect(ReadingsCopyEncoder.copyStatement.contains("(device_id, metric, site, unit, enrichment_partial, time, value, quality)"))
    }

    @Test func missingQualityIsZeroAndLargeQualityKeepsItsBits() {
        let withoutQuality = encode(RowSeries(deviceID: "d", metric: "m", times: [0], values: [0]))
        #expect(Array(withoutQuality.suffix(4)) == [0, 0, 0, 0])
        let large = encode(RowSeries(deviceID: "d", metric: "m", times: [0], values: [0], quality: [UInt32.max]))
        #expect(Array(large.suffix(4)) == [0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test func timesAreShiftedToThePostgresEpochAndNonsenseBecomesOutOfRange() {
        #expect(CopyBinaryFormat.postgresTime(unixMicros: 946_684_800_000_000) == 0)
        #expect(CopyBinaryFormat.postgresTime(unixMicros: 0) == -946_684_800_000_000)
        #expect(CopyBinaryFormat.postgresTime(unixMicros: -1) == -946_684_800_000_001)
        // Overflow and the value meaning -infinity map to a value PostgreSQL refuses, never to a real date.
        #expect(CopyBinaryFormat.postgresTime(unixMicros: .min) == .min + 1)
        #expect(CopyBinaryFormat.postgresTime(unixMicros: .min + 946_684_800_000_000) == .min + 1)
        #expect(CopyBinaryFormat.postgresTime(unixMicros: .max) == .max - 946_684_800_000_000)
    }

    @Test func specialDoublesKeepTheirExactBits() {
        for value in [0.0, -0.0, .leastNonzeroMagnitude, -.leastNormalMagnitude.nextDown, .greatestFiniteMagnitude,
                      -.greatestFiniteMagnitude, .infinity, .nan] {
            let bytes = encode(RowSeries(deviceID: "d", metric: "m", times: [0], values: [value]))
            let valueBytes = Array(bytes[bytes.count - 16..<bytes.count - 8])
            #expect(valueBytes == (0..<8).map { UInt8(truncatingIfNeeded: value.bitPattern >> (56 - 8 * $0)) })
        }
    }

    @Test func manyRowsFlushInChunksAndConcatenateToTheSameBytes() {
        let series = RowSeries(
            deviceID: "device-1", metric: "humidity", times: (0..<1_000).map { Int64($0) * 1_000 },
            values: (0..<1_000).map { Double($0) }, quality: (0..<1_000).map { UInt32($0 % 3) }, site: "s",
            unit: nil, enrichmentPartial: false)
        let whole = encode(series)
        let chunked = encode(series, flushThreshold: 700)
        #expect(whole == chunked)
        let rowSize = 2 + (4 + 8) + (4 + 8) + (4 + 1) + 4 + (4 + 1) + ReadingsCopyEncoder.variablePartSize
        #expect(whole.count == 1_000 * rowSize)
    }

    @Test func unicodeTextIsWrittenAsItsUTF8Bytes() {
        let device = String(repeating: "🌡", count: 16)  // 64 bytes
        let bytes = encode(RowSeries(deviceID: device, metric: "m", times: [0], values: [0]))
        #expect(Array(bytes[2..<6]) == [0, 0, 0, 64])
        #expect(Array(bytes[6..<70]) == Array(device.utf8))
    }

    @Test func deadLettersCarryProducerSeqRawFieldsAndReason() {
        let producer = ProducerID(bytes: Array(1...16))!
        let batch = WriteBatch(
            producer: producer, seq: 9, series: [],
            deadLetters: [
                DeadLetter(deviceID: "bad\0id", metric: "m", timeMicros: -5, value: .nan, quality: 2, reasonCode: 4,
                           reason: "device id has a NUL")
            ])
        let buffer = CopyBuffer()
        DeadLetterCopyEncoder.encode(batch, into: buffer)
        let bytes = Array(buffer.bytes)
        #expect(Array(bytes[0..<2]) == [0, 9])
        #expect(Array(bytes[2..<6]) == [0, 0, 0, 16])
        #expect(Array(bytes[6..<22]) == Array(1...16))
        #expect(Array(bytes[22..<34]) == [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 9])
        // The NUL PostgreSQL cannot store became U+FFFD, so the record of bad input is kept.
        let storedDevice = Array("bad\u{FFFD}id".utf8)
        #expect(Array(bytes[34..<38]) == [0, 0, 0, UInt8(storedDevice.count)])
        #expect(Array(bytes[38..<(38 + storedDevice.count)]) == storedDevice)
    }
}
