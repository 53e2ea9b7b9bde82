import NIOCore
import SwiftProtobuf

/// Decodes whole messages of type `M` (a `ClientFrame` or `ServerFrame`): framing, bounded zstd, protobuf.
///
/// Used by clients and tests, where payloads are small; the server uses `FrameDecoder` and decodes batch
/// payloads off the event loop.
public final class MessageFrameDecoder<M: FrameEnvelope>: ByteToMessageDecoder {
    public typealias InboundOut = M

    private var parser: FrameParser
    private let decompressor = ZstdDecompressor()

    public init(expectsPreface: Bool, limits: FrameLimitsHandle) {
        self.parser = FrameParser(expectsPreface: expectsPreface, limits: limits)
    }

    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try parser.next(&buffer) else { return .needMoreData }
        let message = try FramePayload.decodeFrame(
            M.self, from: frame, decompressor: decompressor,
            maxDecompressedBytes: parser.limits.limits.maxDecompressedBytes)
        context.fireChannelRead(wrapInboundOut(message))
        return .continue
    }

    public func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if seenEOF { try parser.leftover(buffer) }
        return .needMoreData
    }
}

@available(*, unavailable)
extension MessageFrameDecoder: Sendable {}

/// Encodes messages of type `M` as frames, compressing payloads of at least `compressAbove` bytes when
/// `compress` is on and compression actually shrinks them.
public final class MessageFrameEncoder<M: SwiftProtobuf.Message>: MessageToByteEncoder {
    public typealias OutboundIn = M

    private let compressor: ZstdCompressor?
    private let compressAbove: Int

    public init(compress: Bool, compressAbove: Int = 512) {
        self.compressor = compress ? ZstdCompressor() : nil
        self.compressAbove = compressAbove
    }

    public func encode(data: M, out: inout ByteBuffer) throws {
        try FramePayload.encode(data, into: &out, compressor: compressor, compressAbove: compressAbove)
    }
}

@available(*, unavailable)
extension MessageFrameEncoder: Sendable {}
