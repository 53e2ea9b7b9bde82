import CZstd
import NIOCore
import Testing

@testable import SluiceProtocol

/// A zstd frame of `gib` GiB of zeros, produced in 1 MiB steps so the test never holds the expanded data.
func zstdBomb(gib: Int, declareSize: Bool) -> [UInt8] {
    let context = ZSTD_createCCtx()!
    defer { ZSTD_freeCCtx(context) }
    ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 1)
    let total = UInt64(gib) << 30
    if declareSize { ZSTD_CCtx_setPledgedSrcSize(context, total) }
    let chunk = [UInt8](repeating: 0, count: 1 << 20)
    var out = [UInt8](repeating: 0, count: 1 << 20)
    var result: [UInt8] = []
    for i in 0..<(gib << 10) {
        let last = i == (gib << 10) - 1
        chunk.withUnsafeBytes { src in
            var input = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            repeat {
                out.withUnsafeMutableBytes { dst in
                    var output = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                    let remaining = ZSTD_compressStream2(context, &output, &input, last ? ZSTD_e_end : ZSTD_e_continue)
                    precondition(ZSTD_isError(remaining) == 0)
                    result += dst.prefix(output.pos)
                }
            } while input.pos < input.size
        }
    }
    // Flush whatever ZSTD_e_end left.
    var done = false
    while !done {
        out.withUnsafeMutableBytes { dst in
            var output = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
            var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            let remaining = ZSTD_compressStream2(context, &output, &input, ZSTD_e_end)
            result += dst.prefix(output.pos)
            done = remaining == 0
        }
    }
    return result
}

@Suite struct ZstdTests {
    @Test func roundTrip() throws {
        let input = Array((0..<100_000).map { UInt8($0 % 7) })
        let compressed = ZstdCompressor().compress(input)
        #expect(compressed.readableBytes < input.count / 10)
        let output = try ZstdDecompressor().decompress(compressed, cap: 1 << 20)
        #expect(Array(output.readableBytesView) == input)
    }

    @Test(arguments: [false, true])
    func bombFailsAtTheCapWithoutAllocatingPastIt(declareSize: Bool) throws {
        let bomb = zstdBomb(gib: 2, declareSize: declareSize)
        #expect(bomb.count < 256 << 10, "2 GiB of zeros compress to \(bomb.count) bytes")
        let cap = 32 << 20
        let error = #expect(throws: WireError.self) {
            try ZstdDecompressor().decompress(ByteBuffer(bytes: bomb), cap: cap)
        }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("max_decompressed_bytes (32 MiB)") == true, "\(String(describing: error))")
    }

    @Test func bombInsideAFrameIsRejectedByTheDecoder() {
        let bomb = zstdBomb(gib: 1, declareSize: false)
        let error = decodeError(sluicePreface + rawFrame(flags: 1, payload: bomb))
        #expect(error?.code == .frameTooLarge)
    }

    @Test func exactlyTheCapIsAllowed() throws {
        let input = [UInt8](repeating: 3, count: 1 << 16)
        let compressed = ZstdCompressor().compress(input)
        #expect(try ZstdDecompressor().decompress(compressed, cap: 1 << 16).readableBytes == 1 << 16)
        #expect(throws: WireError.self) { try ZstdDecompressor().decompress(compressed, cap: (1 << 16) - 1) }
    }

    @Test func trailingBytesAfterTheFrameAreRejected() {
        var compressed = ZstdCompressor().compress([1, 2, 3])
        compressed.writeBytes([9, 9, 9])
        let error = #expect(throws: WireError.self) { try ZstdDecompressor().decompress(compressed, cap: 1 << 10) }
        #expect(error?.code == .protocolError)
    }

    @Test func truncatedFrameIsRejected() {
        let compressed = ZstdCompressor().compress(Array((0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 31) }))
        let cut = compressed.getSlice(at: 0, length: compressed.readableBytes - 5)!
        let error = #expect(throws: WireError.self) { try ZstdDecompressor().decompress(cut, cap: 1 << 20) }
        #expect(error?.code == .protocolError)
    }

    @Test func contextIsReusableAfterAnError() throws {
        let decompressor = ZstdDecompressor()
        _ = try? decompressor.decompress(ByteBuffer(bytes: [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0]), cap: 100)
        let ok = try decompressor.decompress(ZstdCompressor().compress([1, 2, 3]), cap: 100)
        #expect(Array(ok.readableBytesView) == [1, 2, 3])
    }
}
