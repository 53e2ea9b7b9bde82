import CZstd
import NIOCore

/// A reusable zstd decompression context (one per connection: creating a context costs more than most
/// payloads). Not thread-safe; confine it to one task or event loop at a time.
public final class ZstdDecompressor {
    private let context: OpaquePointer

    public init() {
        guard let context = ZSTD_createDCtx() else { fatalError("ZSTD_createDCtx failed: out of memory") }
        self.context = context
        // A frame may ask for a window of up to 2 GiB, which the decoder would allocate before producing a
        // byte. 2^23 = 8 MiB is what zstd's own levels 1–19 use at most; a frame needing more is refused.
        ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, Self.windowLogMax)
    }

    /// The largest window (log2 bytes) a frame may need: `ZSTD_d_windowLogMax`.
    public static let windowLogMax: Int32 = 23

    deinit { ZSTD_freeDCtx(context) }

    /// Decompresses `input`, which must be exactly one zstd frame, into a buffer of at most `cap` bytes.
    ///
    /// A frame that would expand past `cap` (a zstd bomb) fails as soon as the output reaches the cap; the
    /// output buffer starts small and grows only while the data keeps coming, so memory is bounded by `cap`.
    public func decompress(_ input: ByteBuffer, cap: Int, allocator: ByteBufferAllocator = ByteBufferAllocator())
        throws(WireError) -> ByteBuffer
    {
        let declared = input.withUnsafeReadableBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        if declared == ZSTD_CONTENTSIZE_ERROR {
            throw WireError(.protocolError, "payload has flags bit 0 (zstd) set but is not a zstd frame")
        }
        if declared != ZSTD_CONTENTSIZE_UNKNOWN, declared > UInt64(cap) {
            throw WireError(
                .frameTooLarge,
                "zstd payload declares \(declared) bytes decompressed, above max_decompressed_bytes (\(byteCount(cap)))")
        }
        ZSTD_DCtx_reset(context, ZSTD_reset_session_only)
        var capacity: Int
        if declared != ZSTD_CONTENTSIZE_UNKNOWN {
            capacity = max(Int(declared), 1)
        } else {
            capacity = min(cap, max(input.readableBytes * 4, 64 << 10))
        }
        var output = allocator.buffer(capacity: capacity)
        var finished = false
        let consumedAll: Bool = try input.withUnsafeReadableBytes { (src) throws(WireError) -> Bool in
            var inBuffer = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            while true {
                if output.writableBytes == 0 {
                    if output.capacity >= cap {
                        throw WireError(
                            .frameTooLarge,
                            "zstd payload expands past max_decompressed_bytes (\(byteCount(cap))): send smaller batches")
                    }
                    output.reserveCapacity(minimumWritableBytes: min(cap, output.capacity * 2) - output.writerIndex)
                }
                let before = output.writerIndex
                var result = 0
                var produced = 0
                output.withUnsafeMutableWritableBytes { dst in
                    let writable = min(dst.count, cap - before)
                    var outBuffer = ZSTD_outBuffer(dst: dst.baseAddress, size: writable, pos: 0)
                    result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                    produced = outBuffer.pos
                }
                output.moveWriterIndex(forwardBy: produced)
                if ZSTD_isError(result) != 0 {
                    let name = String(cString: ZSTD_getErrorName(result))
                    throw WireError(.protocolError, "corrupt zstd payload: \(name)")
                }
                if result == 0 {
                    finished = true
                    return inBuffer.pos == inBuffer.size
                }
                if output.writerIndex >= cap {
                    throw WireError(
                        .frameTooLarge,
                        "zstd payload expands past max_decompressed_bytes (\(byteCount(cap))): send smaller batches")
                }
                if inBuffer.pos == inBuffer.size && produced == 0 && output.writableBytes > 0 {
                    // All input consumed, room to write, nothing produced: the frame is cut short.
                    return true
                }
            }
        }
        if !finished {
            throw WireError(.protocolError, "truncated zstd payload: the frame ends before its last block")
        }
        if !consumedAll {
            throw WireError(.protocolError, "zstd payload has bytes after its frame: a payload is exactly one frame")
        }
        return output
    }
}

@available(*, unavailable)
extension ZstdDecompressor: Sendable {}

/// A reusable zstd compression context. Not thread-safe; confine it to one task or event loop at a time.
public final class ZstdCompressor {
    private let context: OpaquePointer

    /// - Parameter level: zstd level; 3 is zstd's default and a good speed/size balance for sensor batches.
    public init(level: Int32 = 3) {
        guard let context = ZSTD_createCCtx() else { fatalError("ZSTD_createCCtx failed: out of memory") }
        self.context = context
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1)
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Appends one zstd frame holding `input` to `output`.
    public func compress(_ input: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        let bound = ZSTD_compressBound(input.count)
        output.reserveCapacity(minimumWritableBytes: bound)
        var written = 0
        output.withUnsafeMutableWritableBytes { dst in
            written = ZSTD_compress2(context, dst.baseAddress, dst.count, input.baseAddress, input.count)
        }
        precondition(ZSTD_isError(written) == 0, "ZSTD_compress2 into a compressBound-sized buffer cannot fail")
        output.moveWriterIndex(forwardBy: written)
    }

    /// One zstd frame holding `input`.
    public func compress(_ input: [UInt8]) -> ByteBuffer {
        var output = ByteBuffer()
        input.withUnsafeBytes { compress($0, into: &output) }
        return output
    }
}

@available(*, unavailable)
extension ZstdCompressor: Sendable {}
