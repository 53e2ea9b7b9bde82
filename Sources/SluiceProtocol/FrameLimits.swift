/// Size limits a frame decoder enforces (DESIGN §2, Framing).
public struct FrameLimits: Sendable, Equatable {
    /// Largest frame payload on the wire, in bytes.
    public var maxFrameBytes: Int
    /// Largest payload after zstd decompression, in bytes. Decompression never allocates more than this.
    public var maxDecompressedBytes: Int

    public init(maxFrameBytes: Int, maxDecompressedBytes: Int) {
        self.maxFrameBytes = maxFrameBytes
        self.maxDecompressedBytes = maxDecompressedBytes
    }

    /// Before the handshake completes nobody has been authenticated, so a frame is at most 64 KiB: enough for
    /// a `Hello`, too little for a stranger to make the server buffer much.
    public static let handshake = FrameLimits(maxFrameBytes: 64 << 10, maxDecompressedBytes: 64 << 10)

    /// What `Welcome` offers unless configured otherwise: 4 MiB on the wire, 32 MiB decompressed.
    public static let defaultNegotiated = FrameLimits(maxFrameBytes: 4 << 20, maxDecompressedBytes: 32 << 20)
}

/// The limits one connection's decoder currently applies, shared between the decoder and the session that
/// completes the handshake.
///
/// Confined to the connection's event loop (decoder and session handler run there), hence not `Sendable`.
public final class FrameLimitsHandle {
    public var limits: FrameLimits

    public init(_ limits: FrameLimits = .handshake) {
        self.limits = limits
    }
}

@available(*, unavailable)
extension FrameLimitsHandle: Sendable {}
