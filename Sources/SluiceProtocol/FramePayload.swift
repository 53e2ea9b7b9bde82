import NIOCore
import SwiftProtobuf

/// The two top-level messages, each a `oneof` that must hold exactly one known case.
public protocol FrameEnvelope: SwiftProtobuf.Message {
    var holdsKnownKind: Bool { get }
}

extension ClientFrame: FrameEnvelope {
    public var holdsKnownKind: Bool { kind != nil }
}

extension ServerFrame: FrameEnvelope {
    public var holdsKnownKind: Bool { kind != nil }
}

/// Turns payloads into messages and back: zstd (bounded) and protobuf.
public enum FramePayload {
    /// Decodes `frame` as one protobuf message of type `M`, decompressing it first if its flags say so.
    ///
    /// - Parameters:
    ///   - decompressor: reused across frames of one connection; needed only for compressed frames.
    ///   - maxDecompressedBytes: the cap on the decompressed size (the bomb guard).
    public static func decode<M: SwiftProtobuf.Message>(
        _ type: M.Type, from frame: RawFrame, decompressor: ZstdDecompressor?, maxDecompressedBytes: Int
    ) throws(WireError) -> M {
        var payload = frame.payload
        if frame.isCompressed {
            let decompressor = decompressor ?? ZstdDecompressor()
            payload = try decompressor.decompress(payload, cap: maxDecompressedBytes)
        }
        let message: M
        do {
            message = try M(serializedBytes: payload.readableBytesSpan)
        } catch {
            throw WireError(
                .protocolError,
                "payload of \(payload.readableBytes) bytes is not a valid \(M.protoMessageName) protobuf message (\(error))")
        }
        return message
    }

    /// Decodes a `ClientFrame` or `ServerFrame` and checks that one of its known cases is set.
    public static func decodeFrame<M: FrameEnvelope>(
        _ type: M.Type, from frame: RawFrame, decompressor: ZstdDecompressor?, maxDecompressedBytes: Int
    ) throws(WireError) -> M {
        let message = try decode(M.self, from: frame, decompressor: decompressor, maxDecompressedBytes: maxDecompressedBytes)
        guard message.holdsKnownKind else { throw unknownCase(message.unknownFields, M.protoMessageName) }
        return message
    }

    private static func unknownCase(_ unknown: UnknownStorage, _ name: String) -> WireError {
        if unknown.data.isEmpty {
            return WireError(.protocolError, "\(name) has no message set: every frame must hold exactly one")
        }
        return WireError(
            .unimplemented,
            "\(name) holds a message kind this server does not know (\(unknown.data.count) bytes of unknown fields): is the peer newer than protocol v1?")
    }

    /// Appends one whole frame (prefix and payload) holding `message` to `out`.
    ///
    /// - Parameter compressor: when given and the serialized message is at least `compressAbove` bytes, the
    ///   payload is zstd-compressed, but only if that makes it smaller.
    public static func encode<M: SwiftProtobuf.Message>(
        _ message: M, into out: inout ByteBuffer, compressor: ZstdCompressor? = nil, compressAbove: Int = 512
    ) throws(WireError) {
        let bytes: [UInt8]
        do {
            bytes = try message.serializedBytes()
        } catch {
            throw WireError(.internal, "could not serialize \(M.protoMessageName): \(error)")
        }
        let start = out.writerIndex
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(0), endianness: .big)
        if let compressor, bytes.count >= compressAbove {
            bytes.withUnsafeBytes { compressor.compress($0, into: &out) }
            let compressedCount = out.writerIndex - start - RawFrame.prefixBytes
            if compressedCount < bytes.count {
                out.setInteger(RawFrame.zstdFlag, at: start)
                out.setInteger(UInt32(compressedCount), at: start + 1, endianness: .big)
                return
            }
            out.moveWriterIndex(to: start + RawFrame.prefixBytes)
        }
        out.writeBytes(bytes)
        out.setInteger(UInt32(bytes.count), at: start + 1, endianness: .big)
    }
}
