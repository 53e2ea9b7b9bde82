import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceProtocol

/// A bare protocol client for tests, built on the wire module only: it can speak sluice correctly, and it
/// can send any bytes at all (wrong prefaces, reserved bits, bombs). Frames the server sends are collected
/// and read back with `next(timeout:)`.
public final class RawClient: Sendable {
    private let channel: any Channel
    private let inbox: FrameInbox
    /// Credit held, as this client counts it: Welcome's window plus every Credit read, minus readings sent.
    public let held = NIOLockedValueBox(0)
    /// Every Ack and Error read so far (by `next`, whoever called it), by seq.
    public let seenAcks = NIOLockedValueBox<[UInt64: Ack]>([:])
    /// When each ack was taken from the inbox (the first time): latency as this client observes it.
    public let ackTimes = NIOLockedValueBox<[UInt64: ContinuousClock.Instant]>([:])
    public let seenErrors = NIOLockedValueBox<[ErrorFrame]>([])

    /// How long a wait for something the server will send lasts by default. Generous, because it costs nothing
    /// when the frame comes and a loaded 2-core machine running the whole suite delays one by many seconds
    /// (10 s failed there); a test that expects silence passes its own short timeout.
    public static let patience: Duration = .seconds(60)

    private init(channel: any Channel, inbox: FrameInbox) {
        self.channel = channel
        self.inbox = inbox
    }

    public static func connect(port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> RawClient {
        let inbox = FrameInbox()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(
                            MessageFrameDecoder<ServerFrame>(expectsPreface: false, limits: FrameLimitsHandle(.defaultNegotiated))),
                        FrameCollector(inbox: inbox),
                    ])
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: channel, inbox: inbox)
    }

    // MARK: Sending

    public func sendBytes(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    }

    public func sendPreface() async throws {
        try await sendBytes(sluicePreface)
    }

    /// Sends `frame` as one wire frame, zstd-compressed when asked.
    public func send(_ frame: ClientFrame, compressed: Bool = false) async throws {
        var buffer = channel.allocator.buffer(capacity: 256)
        try FramePayload.encode(frame, into: &buffer, compressor: compressed ? ZstdCompressor() : nil, compressAbove: 0)
        try await channel.writeAndFlush(buffer)
    }

    /// Sends `payload` under a hand-made prefix.
    public func sendRawFrame(flags: UInt8, payload: [UInt8], declaredLength: UInt32? = nil) async throws {
        var buffer = channel.allocator.buffer(capacity: payload.count + 5)
        buffer.writeInteger(flags)
        buffer.writeInteger(declaredLength ?? UInt32(payload.count), endianness: .big)
        buffer.writeBytes(payload)
        try await channel.writeAndFlush(buffer)
    }

    /// Preface + Hello; returns the Welcome (or throws with whatever the server sent instead).
    @discardableResult
    public func handshake(
        producer: [UInt8], token: String = "", version: UInt32 = 1, creditReturns: Bool = false
    ) async throws -> Welcome {
        try await sendPreface()
        var hello = Self.hello(producer: producer, token: token, version: version)
        hello.creditReturns = creditReturns
        try await send(ClientFrame(.hello(hello)))
        let frame = try await next()
        guard case .welcome(let welcome)? = frame?.kind else {
            throw TestSetupError("expected Welcome, got \(frame.map { "\($0)" } ?? "connection closed")")
        }
        held.withLockedValue { $0 += Int(welcome.initialCredit) }
        return welcome
    }

    public static func hello(producer: [UInt8], token: String = "", version: UInt32 = 1) -> Hello {
        var hello = Hello()
        hello.protocolVersion = version
        hello.producerID = Data(producer)
        hello.token = token
        hello.clientName = "raw-test-client"
        hello.clientVersion = "0"
        return hello
    }

    /// Sends a batch and charges its readings to `held`.
    public func sendBatch(_ batch: Batch, compressed: Bool = false) async throws {
        held.withLockedValue { $0 -= batch.series.reduce(0) { $0 + $1.readingCount } }
        try await send(ClientFrame(.batch(batch)), compressed: compressed)
    }

    /// Waits (reading frames) until the credit held covers `batch`, then sends it, as a well-behaved client does:
    /// when short, it asks for the whole batch once (`CreditRequest`), since a first window can be as small as
    /// 64 readings while many connections are new and only a request is sure to be granted.
    public func sendBatchWhenCredit(_ batch: Batch, timeout: Duration = RawClient.patience, compressed: Bool = false) async throws {
        let readings = batch.series.reduce(0) { $0 + $1.readingCount }
        let deadline = ContinuousClock.now + timeout
        if held.withLockedValue({ $0 }) < readings { try await send(.creditRequest(UInt64(readings))) }
        while held.withLockedValue({ $0 }) < readings {
            guard ContinuousClock.now < deadline else {
                throw TestSetupError("no credit for a \(readings)-reading batch within \(timeout) (holding \(held.withLockedValue { $0 }))")
            }
            guard try await next(timeout: deadline - .now) != nil else {
                throw TestSetupError("connection closed while waiting for credit")
            }
        }
        try await sendBatch(batch, compressed: compressed)
    }

    // MARK: Receiving

    /// The next frame, nil once the server closed the connection. Credit frames are counted into `held` and
    /// passed on like any other; Pings are answered.
    public func next(timeout: Duration = RawClient.patience, answeringPings: Bool = true) async throws -> ServerFrame? {
        let deadline = ContinuousClock.now + timeout
        while true {
            switch inbox.take() {
            case .frame(let frame):
                if case .credit(let c)? = frame.kind { held.withLockedValue { $0 += Int(c.readings) } }
                if case .ack(let a)? = frame.kind {
                    seenAcks.withLockedValue { $0[a.seq] = a }
                    let now = ContinuousClock.now
                    ackTimes.withLockedValue { if $0[a.seq] == nil { $0[a.seq] = now } }
                }
                if case .error(let e)? = frame.kind { seenErrors.withLockedValue { $0.append(e) } }
                if answeringPings, case .ping(let p)? = frame.kind {
                    var pong = Pong()
                    pong.nonce = p.nonce
                    try? await send(ClientFrame(.pong(pong)))
                }
                return frame
            case .closed:
                return nil
            case .empty:
                if ContinuousClock.now >= deadline { throw TestSetupError("no frame from the server within \(timeout)") }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    /// Reads until the frame `match` accepts, returning it and everything skipped over.
    public func read(until match: (ServerFrame) -> Bool, timeout: Duration = RawClient.patience) async throws -> (ServerFrame?, [ServerFrame]) {
        var skipped: [ServerFrame] = []
        while let frame = try await next(timeout: timeout) {
            if match(frame) { return (frame, skipped) }
            skipped.append(frame)
        }
        return (nil, skipped)
    }

    /// Reads until every seq in `seqs` is acked (acks read earlier count too); throws on an Error frame that
    /// closes the connection or concerns one of `seqs`.
    public func acks(for seqs: Set<UInt64>, timeout: Duration = RawClient.patience) async throws -> [UInt64: Ack] {
        while true {
            let acks = seenAcks.withLockedValue { all in all.filter { seqs.contains($0.key) } }
            if acks.count == seqs.count { return acks }
            if let e = seenErrors.withLockedValue({ $0.first { $0.closing || seqs.contains($0.seq) } }) {
                throw TestSetupError("server error while waiting for acks: \(e.code.name): \(e.message)")
            }
            guard try await next(timeout: timeout) != nil else {
                throw TestSetupError("connection closed with \(seqs.count - acks.count) batches unacked")
            }
        }
    }

    /// Waits until the server closes the connection (at most `timeout` in all), returning the frames it
    /// sent meanwhile.
    public func framesUntilClosed(timeout: Duration = RawClient.patience, answeringPings: Bool = true) async throws -> [ServerFrame] {
        let deadline = ContinuousClock.now + timeout
        var frames: [ServerFrame] = []
        while let frame = try await next(timeout: deadline - .now, answeringPings: answeringPings) {
            frames.append(frame)
        }
        return frames
    }

    public var isOpen: Bool { channel.isActive }

    /// Takes a received frame without answering Pings (to play a dead peer).
    public func rawTake() -> FrameInbox.Item { inbox.take() }

    public func close() async {
        try? await channel.close()
    }
}

/// Frames received, shared between the channel handler and the test.
public final class FrameInbox: Sendable {
    public enum Item { case frame(ServerFrame), closed, empty }
    private let state = NIOLockedValueBox<(frames: [ServerFrame], closed: Bool)>(([], false))

    public func push(_ frame: ServerFrame) { state.withLockedValue { $0.frames.append(frame) } }
    public func close() { state.withLockedValue { $0.closed = true } }
    public func take() -> Item {
        state.withLockedValue { s in
            if !s.frames.isEmpty { return .frame(s.frames.removeFirst()) }
            return s.closed ? .closed : .empty
        }
    }
}

public final class FrameCollector: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ServerFrame
    public let inbox: FrameInbox
    public init(inbox: FrameInbox) { self.inbox = inbox }
    public func channelRead(context: ChannelHandlerContext, data: NIOAny) { inbox.push(unwrapInboundIn(data)) }
    public func channelInactive(context: ChannelHandlerContext) { inbox.close() }
    public func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

// MARK: - Building batches

public enum Readings {
    /// Now, in Unix microseconds.
    public static var nowMicros: Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    /// A batch of `count` good readings of one device, at distinct times within the last minute.
    public static func batch(seq: UInt64, device: String = "dev-1", metric: String = "temp", count: Int, base: Int64? = nil)
        -> Batch
    {
        let start = base ?? (nowMicros - 3_600_000_000)
        var builder = SeriesBuilder(deviceID: device, metric: metric, reservingCapacity: count)
        for i in 0..<count {
            // 0.1 s apart per seq (a batch holds at most 65,536 readings, 1 µs apart): distinct times, all in the past.
            builder.append(timeMicros: start + Int64(seq) * 100_000 + Int64(i), value: 20 + Double(i % 100) / 100)
        }
        var batch = Batch()
        batch.seq = seq
        batch.series = [builder.build()]
        return batch
    }

    public static func batch(seq: UInt64, series: [Series]) -> Batch {
        var batch = Batch()
        batch.seq = seq
        batch.series = series
        return batch
    }
}

public func producerID(_ n: UInt8) -> [UInt8] {
    (0..<16).map { $0 == 15 ? n : UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
}

extension ClientFrame {
    /// A `CreditRequest`: the client needs to hold `readings` credit in all for its next batch.
    public static func creditRequest(_ readings: UInt64) -> ClientFrame {
        var request = CreditRequest()
        request.readings = readings
        return ClientFrame(.creditRequest(request))
    }

    /// A `CreditReturn`: the client gives back `readings` of the credit it holds.
    public static func creditReturn(_ readings: UInt64) -> ClientFrame {
        var giveBack = CreditReturn()
        giveBack.readings = readings
        return ClientFrame(.creditReturn(giveBack))
    }
}
