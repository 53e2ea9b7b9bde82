import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SluiceStore

/// `GET /status` (JSON for `sluice status`) and `GET /metrics` (Prometheus text) on the HTTP listener.
final class HTTPEndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let status: @Sendable () -> String
    private let metrics: @Sendable () -> [UInt8]
    private var request: HTTPRequestHead?

    init(status: @escaping @Sendable () -> String, metrics: @escaping @Sendable () -> [UInt8]) {
        self.status = status
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
        switch (head.method, path) {
        case (.GET, "/status"):
            (status, contentType, body) = (.ok, "application/json", Array((self.status() + "\n").utf8))
        case (.GET, "/metrics"):
            (status, contentType, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", metrics())
        case (.GET, _):
            (status, contentType, body) = (
                .notFound, "text/plain; charset=utf-8", Array("not found: try /status or /metrics\n".utf8)
            )
        default:
            (status, contentType, body) = (
                .methodNotAllowed, "text/plain; charset=utf-8", Array("only GET is supported\n".utf8)
            )
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension HTTPEndpointHandler: Sendable {}

/// `/status` as the brief defines it.
struct StatusReport: Sendable {
    var uptimeSeconds: Double
    var listen: String
    var connections: Int
    var batchesAccepted: Int
    var batchesDuplicate: Int
    var batchesRejected: Int
    var readingsAccepted: Int
    var readingsRejected: Int
    var queueDepthReadings: Int
    var creditHeldReadings: Int
    var commitLatencyP99Ms: Double
    var databaseReachable: Bool
    /// Why the writers are not committing, and for how long, nil when they are.
    var writerStall: WriterStall? = nil

    var json: String {
        func number(_ x: Double) -> String {
            let rounded = (x * 10).rounded() / 10
            return rounded.isFinite ? String(rounded) : "0"
        }
        var fields: [(String, String)] = [
            ("version", "\"\(SluiceServer.version)\""),
            ("uptime_seconds", number(uptimeSeconds)),
            ("listen", "\"\(listen)\""),
            ("connections", "\(connections)"),
            ("batches_accepted", "\(batchesAccepted)"),
            ("batches_duplicate", "\(batchesDuplicate)"),
            ("batches_rejected", "\(batchesRejected)"),
            ("readings_accepted", "\(readingsAccepted)"),
            ("readings_rejected", "\(readingsRejected)"),
            ("queue_depth_readings", "\(queueDepthReadings)"),
            ("credit_held_readings", "\(creditHeldReadings)"),
            ("commit_latency_p99_ms", number(commitLatencyP99Ms)),
            ("database", databaseReachable ? "\"ok\"" : "\"unreachable\""),
        ]
        if let writerStall {
            fields.append(("writer_stalled_seconds", number(writerStall.seconds)))
            fields.append(("writer_stall_reason", Self.jsonString(writerStall.reason)))
            fields.append(("writer_stall_sqlstate", writerStall.sqlState.map(Self.jsonString) ?? "null"))
        }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    /// `text` as a JSON string literal.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Bounds the HTTP listener: at most `limit` connections open at once (the next is closed at accept), and a
/// connection idle for the configured time is closed, so scrapers that hang or never send cannot pile up.
final class HTTPConnectionLimiter: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    /// Open HTTP connections, shared by every connection's limiter.
    final class Count: Sendable {
        private let open = NIOLockedValueBox(0)
        let limit: Int

        init(limit: Int) { self.limit = limit }

        /// Takes a slot; false when all `limit` are taken.
        func take() -> Bool { open.withLockedValue { if $0 >= limit { return false }; $0 += 1; return true } }
        func give() { open.withLockedValue { $0 -= 1 } }
    }

    private let count: Count
    private var holdsSlot = false

    init(count: Count) { self.count = count }

    func channelActive(context: ChannelHandlerContext) {
        guard count.take() else {
            context.close(promise: nil)
            return
        }
        holdsSlot = true
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if holdsSlot {
            holdsSlot = false
            count.give()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HTTPConnectionLimiter: Sendable {}
