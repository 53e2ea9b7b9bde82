import NIOCore
import NIOEmbedded
import NIOTestUtils
import SwiftProtobuf
import Testing

@testable import SluiceProtocol

/// Frames of every kind, built as a client or server would send them.
enum Samples {
    static var hello: ClientFrame {
        var hello = Hello()
        hello.protocolVersion = 1
        hello.producerID = .init(repeating: 7, count: 16)
        hello.token = "tok"
        hello.clientName = "test"
        hello.clientVersion = "0.0.1"
        hello.compressions = [.none, .zstd]
        return ClientFrame(.hello(hello))
    }

    static func batch(seq: UInt64, readings: Int) -> ClientFrame {
        var builder = SeriesBuilder(deviceID: "dev-1", metric: "temp_c")
        for i in 0..<readings {
            builder.append(timeMicros: 1_700_000_000_000_000 + Int64(i) * 1_000_000, value: 21.37 + Double(i % 10) / 100)
        }
        var batch = Batch()
        batch.seq = seq
        batch.series = [builder.build()]
        return ClientFrame(.batch(batch))
    }

    static var clientFrames: [ClientFrame] {
        var ping = Ping()
        ping.nonce = 42
        var pong = Pong()
        pong.nonce = 43
        return [hello, batch(seq: 1, readings: 3), batch(seq: 2, readings: 5_000), ClientFrame(.ping(ping)),
            ClientFrame(.pong(pong))]
    }

    static var serverFrames: [ServerFrame] {
        var welcome = Welcome()
        welcome.protocolVersion = 1
        welcome.sessionID = 9
        welcome.initialCredit = 10_000
        welcome.maxBatchReadings = 50_000
        welcome.maxFrameBytes = 4 << 20
        welcome.maxDecompressedBytes = 32 << 20
        welcome.heartbeatIntervalMs = 5_000
        var ack = Ack()
        ack.seq = 3
        ack.accepted = 99
        ack.rejected = 1
        var rejection = Rejection()
        rejection.index = 5
        rejection.code = .valueNotFinite
        rejection.message = "value is NaN"
        ack.reasons = [rejection]
        var credit = Credit()
        credit.readings = 5_000
        var goAway = GoAway()
        goAway.reason = "draining"
        goAway.reconnectAfterMs = 1_000
        var ping = Ping()
        ping.nonce = 1
        var pong = Pong()
        pong.nonce = 2
        var bigAck = Ack()
        bigAck.seq = 4
        bigAck.reasons = Array(repeating: rejection, count: 200)
        return [ServerFrame(.welcome(welcome)), ServerFrame(.ack(ack)), ServerFrame(.ack(bigAck)), ServerFrame(.credit(credit)),
            .error(WireError(.invalidArgument, "bad"), seq: 3, closing: false), ServerFrame(.ping(ping)),
            ServerFrame(.pong(pong)), ServerFrame(.goAway(goAway))]
    }
}

/// The bytes of one frame with the given flags and payload, built by hand so tests can lie.
func rawFrame(flags: UInt8 = 0, length: UInt32? = nil, payload: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = [flags]
    let n = length ?? UInt32(payload.count)
    bytes += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
    return bytes + payload
}

func encoded<M: SwiftProtobuf.Message>(_ messages: [M], compress: Bool) throws -> ByteBuffer {
    var out = ByteBuffer()
    let compressor = compress ? ZstdCompressor() : nil
    for m in messages { try FramePayload.encode(m, into: &out, compressor: compressor, compressAbove: 0) }
    return out
}

func serverDecoder(limits: FrameLimits = .defaultNegotiated) -> MessageFrameDecoder<ClientFrame> {
    MessageFrameDecoder<ClientFrame>(expectsPreface: true, limits: FrameLimitsHandle(limits))
}

/// Feeds `bytes` to a fresh server-side decoder and returns the error it raises.
func decodeError(_ bytes: [UInt8], limits: FrameLimits = .defaultNegotiated, close: Bool = false) -> WireError? {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(serverDecoder(limits: limits)))
    defer { _ = try? channel.finish() }
    do {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        if close { _ = try channel.finish() }
    } catch let error as WireError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
    }
    return nil
}

@Suite struct FrameRoundTripTests {
    @Test(arguments: [false, true])
    func everyClientFrameSurvivesTheRoundTrip(compressed: Bool) throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(serverDecoder()))
        var input = ByteBuffer(bytes: sluicePreface)
        var frames = try encoded(Samples.clientFrames, compress: compressed)
        input.writeBuffer(&frames)
        try channel.writeInbound(input)
        for expected in Samples.clientFrames {
            #expect(try channel.readInbound(as: ClientFrame.self) == expected)
        }
        #expect(try channel.readInbound(as: ClientFrame.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test(arguments: [false, true])
    func everyServerFrameSurvivesTheRoundTrip(compressed: Bool) throws {
        let decoder = MessageFrameDecoder<ServerFrame>(expectsPreface: false, limits: FrameLimitsHandle(.defaultNegotiated))
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(decoder))
        try channel.writeInbound(try encoded(Samples.serverFrames, compress: compressed))
        for expected in Samples.serverFrames {
            #expect(try channel.readInbound(as: ServerFrame.self) == expected)
        }
        #expect(try channel.finish().isClean)
    }

    @Test func encoderCompressesOnlyWhenItShrinksThePayload() throws {
        var out = ByteBuffer()
        let compressor = ZstdCompressor()
        try FramePayload.encode(Samples.batch(seq: 1, readings: 5_000), into: &out, compressor: compressor)
        #expect(out.getInteger(at: 0, as: UInt8.self) == RawFrame.zstdFlag)
        out.clear()
        var ping = Ping()
        ping.nonce = 1
        try FramePayload.encode(ClientFrame(.ping(ping)), into: &out, compressor: compressor, compressAbove: 0)
        #expect(out.getInteger(at: 0, as: UInt8.self) == 0, "a tiny payload grows under zstd, so it is sent plain")
    }

    @Test func messageEncoderHandlerWritesFrames() throws {
        let channel = EmbeddedChannel(handler: MessageToByteHandler(MessageFrameEncoder<ServerFrame>(compress: true)))
        for frame in Samples.serverFrames { try channel.writeOutbound(frame) }
        var all = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&chunk) }
        var parser = FrameParser(expectsPreface: false, limits: FrameLimitsHandle(.defaultNegotiated))
        for expected in Samples.serverFrames {
            let raw = try #require(try parser.next(&all))
            #expect(try FramePayload.decodeFrame(ServerFrame.self, from: raw, decompressor: ZstdDecompressor(), maxDecompressedBytes: 1 << 20) == expected)
        }
        #expect(all.readableBytes == 0)
    }

    @Test(arguments: [false, true])
    func byteByByteAndAllAtOnceGiveTheSameFrames(compressed: Bool) throws {
        // NIOTestUtils re-feeds the input byte by byte, all at once and repeated in one stream; the preface
        // appears once per connection, so it is covered by the next test instead.
        let frames = Array(Samples.clientFrames.prefix(2)) + [Samples.clientFrames[3]]
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: try frames.map { (try encoded([$0], compress: compressed), [$0]) },
            decoderFactory: {
                MessageFrameDecoder<ClientFrame>(expectsPreface: false, limits: FrameLimitsHandle(.defaultNegotiated))
            })
    }

    @Test func prefaceAndFramesFedOneByteAtATime() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(serverDecoder()))
        var input = ByteBuffer(bytes: sluicePreface)
        var frames = try encoded(Samples.clientFrames, compress: true)
        input.writeBuffer(&frames)
        for byte in input.readableBytesView { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        for expected in Samples.clientFrames {
            #expect(try channel.readInbound(as: ClientFrame.self) == expected)
        }
        #expect(try channel.finish().isClean)
    }

    @Test func rawDecoderLeavesPayloadsEncoded() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(expectsPreface: true, limits: FrameLimitsHandle(.defaultNegotiated))))
        var input = ByteBuffer(bytes: sluicePreface)
        var frames = try encoded(Samples.clientFrames, compress: true)
        input.writeBuffer(&frames)
        try channel.writeInbound(input)
        var count = 0
        while let raw = try channel.readInbound(as: RawFrame.self) {
            let frame = try FramePayload.decodeFrame(ClientFrame.self, from: raw, decompressor: ZstdDecompressor(), maxDecompressedBytes: 1 << 20)
            #expect(frame == Samples.clientFrames[count])
            count += 1
        }
        #expect(count == Samples.clientFrames.count)
    }
}

@Suite struct FrameErrorTests {
    @Test func wrongPrefaceIsAProtocolErrorNamingWhatArrived() {
        let error = decodeError(Array("GET / HTTP/1.1\r\n".utf8))
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("\"GET \"") == true, "\(String(describing: error))")
    }

    @Test func wrongPrefaceFailsOnItsFirstByte() {
        #expect(decodeError([0x16])?.code == .protocolError, "a TLS ClientHello is refused without waiting for 4 bytes")
    }

    @Test func reservedFlagBitsAreRejected() {
        let error = decodeError(sluicePreface + rawFrame(flags: 0x04, payload: [0x00]))
        #expect(error?.code == .protocolError)
        #expect(error?.message == "frame flags 0x04 use reserved bits (only bit 0, zstd, is defined)")
    }

    @Test func lengthAboveHandshakeLimitIsRejectedBeforeThePayloadArrives() {
        // Only the prefix is sent: the decoder must not wait for (or buffer) 70,000 bytes.
        let error = decodeError(sluicePreface + rawFrame(length: 70_000, payload: []), limits: .handshake)
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("before the handshake completes") == true)
    }

    @Test func lengthAboveMaxFrameBytesIsRejected() {
        let error = decodeError(sluicePreface + rawFrame(length: UInt32((4 << 20) + 1), payload: []))
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("4 MiB") == true)
    }

    @Test func raisedLimitsApplyAfterTheHandshake() throws {
        let limits = FrameLimitsHandle(.handshake)
        var parser = FrameParser(expectsPreface: false, limits: limits)
        var big = ByteBuffer(bytes: rawFrame(payload: Array(repeating: 0, count: 100_000)))
        #expect(throws: WireError.self) { try parser.next(&big) }
        limits.limits = .defaultNegotiated
        #expect(try parser.next(&big)?.payload.readableBytes == 100_000)
    }

    @Test func truncatedFrameAtEOFIsReported() {
        let bytes = sluicePreface + rawFrame(length: 100, payload: Array(repeating: 1, count: 40))
        let error = decodeError(bytes, close: true)
        #expect(error?.code == .protocolError)
        #expect(error?.message == "connection closed in the middle of a frame: 40 of 100 payload bytes received")
    }

    @Test func corruptZstdIsAProtocolError() {
        let error = decodeError(sluicePreface + rawFrame(flags: 1, payload: [0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5, 6]))
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("zstd") == true)
    }

    @Test func payloadThatIsNotZstdAtAllIsAProtocolError() {
        let error = decodeError(sluicePreface + rawFrame(flags: 1, payload: Array("hello".utf8)))
        #expect(error?.code == .protocolError)
    }

    @Test func garbageProtobufIsAProtocolError() {
        let error = decodeError(sluicePreface + rawFrame(payload: [0xff, 0xff, 0xff, 0xff, 0x0f]))
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("not a valid sluice.v1.ClientFrame") == true, "\(String(describing: error))")
    }

    @Test func emptyFrameIsAProtocolError() {
        let error = decodeError(sluicePreface + rawFrame(payload: []))
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("no message set") == true)
    }

    @Test func unknownOneofCaseIsUnimplemented() {
        // Field 15, length-delimited, 2 bytes: a oneof case from some future protocol version.
        let error = decodeError(sluicePreface + rawFrame(payload: [0x7a, 0x02, 0x08, 0x01]))
        #expect(error?.code == .unimplemented)
        #expect(error?.message.contains("does not know") == true)
    }

    @Test func framesBeforeAnErrorAreStillDelivered() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(serverDecoder()))
        var ping = Ping()
        ping.nonce = 5
        var input = sluicePreface
        input += Array(try encoded([ClientFrame(.ping(ping))], compress: false).readableBytesView)
        input += rawFrame(flags: 0x80, payload: [])
        #expect(throws: WireError.self) { try channel.writeInbound(ByteBuffer(bytes: input)) }
        #expect(try channel.readInbound(as: ClientFrame.self) == ClientFrame(.ping(ping)))
    }
}
