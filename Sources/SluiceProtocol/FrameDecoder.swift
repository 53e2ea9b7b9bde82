import NIOCore

/// One frame as it crossed the wire: the flags byte and the still-encoded payload.
public struct RawFrame: Sendable, Equatable {
    /// Flags bit 0: the payload is one zstd frame. Other bits are reserved and rejected by the decoder.
    public static let zstdFlag: UInt8 = 0x01

    public var flags: UInt8
    public var payload: ByteBuffer

    public init(flags: UInt8, payload: ByteBuffer) {
        self.flags = flags
        self.payload = payload
    }

    public var isCompressed: Bool { flags & Self.zstdFlag != 0 }

    /// Size of the 5-byte prefix: flags u8, length u32 big-endian.
    public static let prefixBytes = 5
}

/// The framing rules, independent of NIO's handler machinery: preface, prefix, reserved bits, size limits.
///
/// `FrameDecoder` and `MessageFrameDecoder` both run it; keeping it a value makes every rule testable alone.
public struct FrameParser {
    private enum State {
        case awaitingPreface
        case awaitingPrefix
    }

    private var state: State
    public let limits: FrameLimitsHandle

    /// - Parameters:
    ///   - expectsPreface: true on the server side, where a connection must open with `SLU1`.
    ///   - limits: shared with whoever completes the handshake and raises the limits.
    public init(expectsPreface: Bool, limits: FrameLimitsHandle) {
        self.state = expectsPreface ? .awaitingPreface : .awaitingPrefix
        self.limits = limits
    }

    /// Takes the next complete frame off the front of `buffer`, or returns nil if more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(WireError) -> RawFrame? {
        if case .awaitingPreface = state {
            // Check each byte as it arrives, so a stray HTTP request fails at once instead of waiting.
            let have = min(buffer.readableBytes, sluicePreface.count)
            let got = buffer.getBytes(at: buffer.readerIndex, length: have) ?? []
            if got != Array(sluicePreface.prefix(have)) {
                throw .badPreface(got)
            }
            guard have == sluicePreface.count else { return nil }
            buffer.moveReaderIndex(forwardBy: have)
            state = .awaitingPrefix
        }
        guard buffer.readableBytes >= RawFrame.prefixBytes,
            let flags = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let length = buffer.getInteger(at: buffer.readerIndex + 1, endianness: .big, as: UInt32.self)
        else { return nil }

        if flags & ~RawFrame.zstdFlag != 0 {
            let hex = String(flags, radix: 16).leftPadded(to: 2)
            throw WireError(
                .protocolError, "frame flags 0x\(hex) use reserved bits (only bit 0, zstd, is defined)")
        }
        let limit = limits.limits.maxFrameBytes
        if Int(length) > limit {
            let when = limit == FrameLimits.handshake.maxFrameBytes ? " before the handshake completes" : ""
            throw WireError(
                .frameTooLarge,
                "frame length \(length) bytes is above the limit of \(byteCount(limit))\(when): split the batch")
        }
        guard buffer.readableBytes >= RawFrame.prefixBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: RawFrame.prefixBytes)
        let payload = buffer.readSlice(length: Int(length))!
        return RawFrame(flags: flags, payload: payload)
    }

    /// Called at end of stream with the bytes left over: anything there is a frame cut short.
    public func leftover(_ buffer: ByteBuffer) throws(WireError) {
        guard buffer.readableBytes > 0 else { return }
        if case .awaitingPreface = state {
            throw WireError(
                .protocolError,
                "connection closed after \(buffer.readableBytes) of the 4 preface bytes")
        }
        if buffer.readableBytes < RawFrame.prefixBytes {
            throw WireError(
                .protocolError,
                "connection closed in the middle of a frame prefix (\(buffer.readableBytes) of 5 bytes)")
        }
        let length = buffer.getInteger(at: buffer.readerIndex + 1, endianness: .big, as: UInt32.self) ?? 0
        throw WireError(
            .protocolError,
            "connection closed in the middle of a frame: \(buffer.readableBytes - RawFrame.prefixBytes) of \(length) payload bytes received")
    }
}

/// Splits the byte stream into `RawFrame`s, leaving the payload encoded: the server decompresses and decodes
/// batch payloads off the event loop.
public final class FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RawFrame

    private var parser: FrameParser

    public init(expectsPreface: Bool, limits: FrameLimitsHandle) {
        self.parser = FrameParser(expectsPreface: expectsPreface, limits: limits)
    }

    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try parser.next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
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
extension FrameDecoder: Sendable {}
