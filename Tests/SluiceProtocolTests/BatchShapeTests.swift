import NIOCore
import SluiceProtocol
import Testing

/// `BatchShape.scan`: a batch's shape read off its protobuf bytes, before anything is materialised.
@Suite struct BatchShapeTests {
    let limits = BatchShapeLimits(maxReadings: 100, maxSeries: 4, maxStringBytes: 64)

    func series(_ device: String = "dev-1", _ metric: String = "temp", count: Int = 1) -> Series {
        var s = Series()
        s.deviceID = device
        s.metric = metric
        s.baseTimeUs = 1_700_000_000_000_000
        s.timeDeltasUs = Array(repeating: 1_000, count: count)
        s.values = Array(repeating: 1.5, count: count)
        return s
    }

    func wire(_ series: [Series], seq: UInt64 = 7) throws -> ByteBuffer {
        var b = Batch()
        b.seq = seq
        b.series = series
        let bytes: [UInt8] = try ClientFrame(.batch(b)).serializedBytes()
        return ByteBuffer(bytes: bytes)
    }

    func message(_ series: [Series]) -> String {
        do {
            _ = try BatchShape.scan(try wire(series), limits: limits)
            return "no error"
        } catch let error as BatchShapeError {
            return error.error.message
        } catch {
            return "\(error)"
        }
    }

    @Test func aGoodBatchIsCounted() throws {
        #expect(try BatchShape.scan(wire([series(count: 5), series("b", count: 7)]), limits: limits) == .batch(seq: 7, readings: 12, series: 2))
        // Large deltas take several varint bytes each; still one reading each.
        var big = series(count: 3)
        big.timeDeltasUs = [1 << 40, -(1 << 40), 1]
        #expect(try BatchShape.scan(wire([big]), limits: limits) == .batch(seq: 7, readings: 3, series: 1))
    }

    @Test func everyBoundHasItsOwnMessage() {
        #expect(message([]) == "batch 7: holds no series and no readings: a batch must carry at least one reading")
        #expect(message([series(), Series()]) == "batch 7: series 1 holds no readings: leave empty series out")
        #expect(message((0..<5).map { series("d\($0)") }).contains("more than 4 series"))
        #expect(message([series(count: 101)]).contains("more than 100 readings"))
        // Long strings are the validator's business (their readings are dead-lettered), not a shape error.
        #expect(message([series(String(repeating: "x", count: 100_000), String(repeating: "m", count: 65))]) == "no error")
        let described = Array(repeating: UInt8(ascii: "x"), count: 65).withUnsafeBytes { describeOversized($0) }
        #expect(described.hasPrefix("\"xxxxxxxxxxxxxxxx…\" (65 bytes, fnv1a "), "\(described)")
        #expect(described.utf8.count < 64)
    }

    @Test func theErrorCarriesTheSeq() {
        #expect { try BatchShape.scan(try wire([Series()], seq: 42), limits: limits) } throws: { ($0 as! BatchShapeError).seq == 42 }
    }

    @Test func otherFramesAndGarbageAreLeftToTheDecoder() throws {
        var ping = Ping()
        ping.nonce = 3
        #expect(try BatchShape.scan(ByteBuffer(bytes: try ClientFrame(.ping(ping)).serializedBytes() as [UInt8]), limits: limits) == .other)
        // Bytes the scan cannot walk are a PROTOCOL_ERROR, never waved through to the decoder.
        for garbage: [UInt8] in [[0x12, 0xff, 0xff], [0x07], [0x0b, 0x0c, 0x12, 0x02, 0x12, 0x00], [0x12, 0x03, 0x12, 0x01, 0x0b]] {
            #expect { try BatchShape.scan(ByteBuffer(bytes: garbage), limits: limits) } throws: {
                ($0 as! BatchShapeError).error.code == .protocolError
            }
        }
    }

    @Test func aMillionEmptySeriesStopAtTheFirst() throws {
        var batch: [UInt8] = [0x08, 0x01]
        for _ in 0..<1_000_000 { batch += [0x12, 0x00] }
        var frame: [UInt8] = [0x12]
        var n = batch.count
        while n >= 0x80 {
            frame.append(UInt8(n & 0x7f) | 0x80)
            n >>= 7
        }
        frame.append(UInt8(n))
        frame += batch
        #expect { try BatchShape.scan(ByteBuffer(bytes: frame), limits: BatchShapeLimits()) } throws: {
            ($0 as! BatchShapeError).error.message == "batch 1: series 0 holds no readings: leave empty series out"
        }
    }

    @Test func theDecompressorRefusesWindowsOver8MiB() throws {
        // A frame header asking for a 2^27 window: refused before any allocation of that size.
        // Magic, frame header descriptor 0x00 (no content size, window descriptor follows), window log 27.
        let header: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, UInt8((27 - 10) << 3), 0x01, 0x00, 0x00]
        #expect(throws: WireError.self) {
            _ = try ZstdDecompressor().decompress(ByteBuffer(bytes: header), cap: 32 << 20)
        }
        #expect(ZstdDecompressor.windowLogMax == 23)
    }
}
