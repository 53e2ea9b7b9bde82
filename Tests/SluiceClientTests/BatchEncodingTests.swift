import NIOCore
import SluiceProtocol
import Testing

@testable import SluiceClient

@Suite struct BatchEncodingTests {
    /// A regular 1 Hz series at 0.01 resolution (a random walk), as DESIGN §6 measures wire size.
    static func regularSeries(count: Int, device: String = "pump-17", metric: String = "temp_c") -> SeriesChunk {
        var random = SystemRandomNumberGenerator()
        var scaled: Int64 = 2_137
        var times: [Int64] = []
        var values: [Double] = []
        for i in 0..<count {
            times.append(1_714_564_800_000_000 + Int64(i) * 1_000_000)
            scaled += Int64.random(in: -1...1, using: &random)
            values.append(Double(scaled) / 100)
        }
        return SeriesChunk(deviceID: device, metric: metric, times: times, values: values)
    }

    @Test func aRegularSeriesCostsUnderTwoBytesPerReadingOnTheWire() throws {
        let chunk = Self.regularSeries(count: 5_000)
        let frame = try BatchEncoding.frame(BatchEncoding.batch(seq: 1, chunks: [chunk]), compressor: ZstdCompressor())
        let perReading = Double(frame.readableBytes) / Double(chunk.count)
        #expect(perReading < 2.0, "\(perReading) bytes per reading")
    }

    @Test func framesDecodeBackToTheSameReadingsInOrder() throws {
        let a = Self.regularSeries(count: 100, device: "a")
        let b = SeriesChunk(deviceID: "b", metric: "m", times: [5, 6], values: [0.1 + 0.2, .nan], quality: [0, 3])
        let a2 = Self.regularSeries(count: 3, device: "a")
        let frame = try BatchEncoding.frame(BatchEncoding.batch(seq: 7, chunks: [a, b, a2]), compressor: ZstdCompressor())
        let readings = BatchEncoding.readings(ofFrame: frame)
        #expect(readings.count == 105)
        // Chunks of one series are merged into one wire series, in order: a, a2, then b.
        #expect(readings[0..<100].map(\.value) == a.values)
        #expect(readings[100..<103].map(\.timeMicros) == a2.times)
        #expect(readings[103].value == 0.1 + 0.2)
        #expect(readings[104].value.isNaN && readings[104].quality == 3)
    }

    @Test func smallBatchesAreSentUncompressedWhenZstdWouldNotHelp() throws {
        let chunk = SeriesChunk(deviceID: "d", metric: "m", times: [1], values: [1])
        let frame = try BatchEncoding.frame(BatchEncoding.batch(seq: 1, chunks: [chunk]), compressor: ZstdCompressor())
        #expect(frame.getInteger(at: 0, as: UInt8.self) == 0)
    }
}
