import NIOCore

/// Bytes received versus bytes the frame decoder turned into frames, for one connection: when more came in
/// than was consumed, a frame is half received. The session uses it to drop peers that start a frame and
/// stall (a classic way to pin server memory).
///
/// Shared by `ReadProgressHandler` and the session handler, which run on the same event loop.
final class ReadProgress {
    var bytesIn = 0
    var bytesConsumed = 0
    var lastBytesAt: UInt64 = 0

    var partialFramePending: Bool { bytesIn > bytesConsumed }
}

@available(*, unavailable)
extension ReadProgress: Sendable {}

/// Sits in front of the frame decoder and counts the bytes that arrive.
final class ReadProgressHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let progress: ReadProgress

    init(progress: ReadProgress) {
        self.progress = progress
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        progress.bytesIn += unwrapInboundIn(data).readableBytes
        progress.lastBytesAt = NIODeadline.now().uptimeNanoseconds
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension ReadProgressHandler: Sendable {}
