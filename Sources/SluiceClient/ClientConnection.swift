import NIOCore
import NIOPosix
import SluiceProtocol
import Synchronization

/// What a connection reports to its client.
enum ConnectionEvent: Sendable {
    case frame(ServerFrame)
    /// The connection ended; `reason` says why (nil for an orderly close).
    case closed(reason: String?)
    /// TLS failed in a way reconnecting cannot fix (an untrusted certificate, a server without TLS); the
    /// connection closes next.
    case tlsFailed(reason: String)
}

/// One TCP connection to a server: the NIO pipeline and a stream of what arrives.
///
/// The pipeline answers `Ping` itself and runs the heartbeat, so a busy client actor never delays one: an
/// interval without writing sends `Ping` (the server knows we are alive); an interval without reading sends
/// `Ping` too (a busy server still answers `Pong` while its acks are slow), and only 3 silent intervals in a
/// row close the connection as dead.
struct ClientConnection: Sendable {
    let channel: any Channel
    let events: AsyncStream<ConnectionEvent>
    private let flush = FlushCoalescer()

    init(channel: any Channel, events: AsyncStream<ConnectionEvent>) {
        self.channel = channel
        self.events = events
    }

    /// - Parameter tls: when given, the connection speaks TLS (its handler goes first in the pipeline).
    static func connect(to endpoint: Endpoint, timeout: Duration, group: any EventLoopGroup, tls: ClientTLSSetup? = nil)
        async throws -> ClientConnection
    {
        let (events, continuation) = AsyncStream.makeStream(of: ConnectionEvent.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(Int64(timeout.seconds * 1e9)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let limits = FrameLimitsHandle(.defaultNegotiated)
                    if let tls { try channel.pipeline.syncOperations.addHandler(tls.handler(for: endpoint.host)) }
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MessageFrameDecoder<ServerFrame>(expectsPreface: false, limits: limits)))
                    try channel.pipeline.syncOperations.addHandler(ServerFrameHandler(continuation: continuation))
                }
            }
        let channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        return ClientConnection(channel: channel, events: events)
    }

    /// A short reason for a failed connect, instead of NIO's nested error dump.
    static func describe(connectError error: any Error, timeout: Duration) -> String {
        if case ChannelError.connectTimeout = error { return "no connection within \(timeout)" }
        let text = "\(error)"
        if text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            return "connection refused (is sluiced listening there?)"
        }
        if text.contains("connectTimeout") { return "no connection within \(timeout)" }
        if text.contains("Network is unreachable") { return "network unreachable" }
        if text.contains("No address") || text.contains("resolution") { return "cannot resolve the host name" }
        return text
    }

    /// Writes the preface and `Hello`.
    func sendHello(_ hello: Hello) {
        var buffer = channel.allocator.buffer(capacity: 128)
        buffer.writeBytes(sluicePreface)
        try? FramePayload.encode(ClientFrame(.hello(hello)), into: &buffer)
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// Writes a `CreditRequest`: the client needs to hold `readings` credit in all to send its next batch.
    func requestCredit(_ readings: UInt64) {
        var request = CreditRequest()
        request.readings = readings
        var buffer = channel.allocator.buffer(capacity: 16)
        guard (try? FramePayload.encode(ClientFrame(.creditRequest(request)), into: &buffer)) != nil else { return }
        write(buffer)
    }

    /// Writes a `CreditReturn`: the client gives back `readings` of the credit it holds (the answer to a
    /// `CreditRecall`), after every batch written before it.
    func returnCredit(_ readings: UInt64) {
        var giveBack = CreditReturn()
        giveBack.readings = readings
        var buffer = channel.allocator.buffer(capacity: 16)
        guard (try? FramePayload.encode(ClientFrame(.creditReturn(giveBack)), into: &buffer)) != nil else { return }
        write(buffer)
    }

    /// Starts heartbeats at the interval the server asked for.
    func startHeartbeat(interval: Duration) {
        let ms = max(Int64(interval.seconds * 1000), 100)
        channel.eventLoop.execute {
            let idle = IdleStateHandler(readTimeout: .milliseconds(ms), writeTimeout: .milliseconds(ms))
            try? channel.pipeline.syncOperations.addHandler(idle, position: .first)
        }
    }

    /// Writes a frame. Frames written while the event loop is busy leave together in one flush (one
    /// syscall, fewer TCP segments): a client streaming small batches would otherwise pay a syscall each.
    func write(_ frame: ByteBuffer) {
        let channel = self.channel
        let flush = self.flush
        channel.eventLoop.execute {
            channel.write(frame, promise: nil)
            flush.schedule(on: channel)
        }
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Schedules at most one flush at a time, behind the writes already queued on the event loop: every write is
/// followed by a flush, and writes that queue up while the loop is busy share it.
final class FlushCoalescer: Sendable {
    private let scheduled = Atomic<Bool>(false)

    /// Call on the channel's event loop, after a write.
    func schedule(on channel: any Channel) {
        guard !scheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        channel.eventLoop.execute { [self] in
            scheduled.store(false, ordering: .releasing)
            channel.flush()
        }
    }
}

/// Forwards decoded server frames to the client, answers pings, and sends heartbeats.
final class ServerFrameHandler: ChannelInboundHandler {
    typealias InboundIn = ServerFrame
    typealias OutboundOut = ByteBuffer

    private let continuation: AsyncStream<ConnectionEvent>.Continuation
    private var failure: String?
    private var nonce: UInt64 = 0
    /// Heartbeat intervals in a row without a byte from the server.
    private var silentIntervals = 0

    init(continuation: AsyncStream<ConnectionEvent>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        silentIntervals = 0
        let frame = unwrapInboundIn(data)
        if case .ping(let ping) = frame.kind {
            var pong = Pong()
            pong.nonce = ping.nonce
            send(ClientFrame(.pong(pong)), context: context)
            return
        }
        continuation.yield(.frame(frame))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event as? IdleStateHandler.IdleStateEvent {
        case .write?:
            ping(context: context)
        case .read?:
            silentIntervals += 1
            if silentIntervals >= 3 {
                failure = failure ?? "the server was silent for 3 heartbeat intervals"
                context.close(promise: nil)
            } else {
                ping(context: context)
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let tls = TLSFailure(error) {
            if failure == nil && tls.fatal { continuation.yield(.tlsFailed(reason: tls.reason)) }
            failure = failure ?? tls.reason
        } else {
            failure = failure ?? "\(error)"
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.yield(.closed(reason: failure))
        continuation.finish()
        context.fireChannelInactive()
    }

    private func ping(context: ChannelHandlerContext) {
        nonce &+= 1
        var ping = Ping()
        ping.nonce = nonce
        send(ClientFrame(.ping(ping)), context: context)
    }

    private func send(_ frame: ClientFrame, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 16)
        try? FramePayload.encode(frame, into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }
}

@available(*, unavailable)
extension ServerFrameHandler: Sendable {}
