import Foundation
import SluiceCore
import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// Every way a client can be wrong, over a real socket: a clear Error frame, the offender alone is closed,
/// and a healthy client streaming on the same server meanwhile loses and duplicates nothing.
@Suite struct BadInputTests {
    enum BadInput: String, CaseIterable, CustomTestStringConvertible {
        case wrongPreface, reservedFlagBits, oversizedFrameBeforeHandshake, oversizedFrameAfterHandshake, zstdBomb
        case garbageProtobufOnTheLoop, garbageProtobufInThePipeline, creditViolation, wrongToken
        case unsupportedProtocolVersion, batchBeforeHello
        var testDescription: String { rawValue }
    }

    struct Expected {
        var code: StatusCode
        var messageContains: String
    }

    @Test(arguments: BadInput.allCases)
    func badInputGetsAClearErrorAndClosesOnlyTheOffender(_ input: BadInput) async throws {
        let token = "slu_testtoken"
        let server = try await TestServer.start(database: "srv_bad_\(input.rawValue.lowercased())") { config in
            config.frameLimits = FrameLimits(maxFrameBytes: 256 << 10, maxDecompressedBytes: 1 << 20)
            config.flow = .init(budget: 100_000, maxWindow: 5_000, initialWindow: 5_000)
            if input == .wrongToken {
                config.tokens = TokenTable(entries: [
                    TokenEntry(id: "t1", hashHex: SHA256.hexDigest(token), devicePrefix: "", createdAt: 0, name: "")
                ])
            }
        }
        defer { Task { await server.stop() } }
        let neighbour = HealthyNeighbour.start(port: server.port, producer: 200, token: input == .wrongToken ? token : "")
        let offender = try await RawClient.connect(port: server.port)
        let expected = try await misbehave(input, offender)

        let frames = try await offender.framesUntilClosed()
        let errors = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }
        #expect(errors.count == 1, "exactly one Error frame, got \(frames)")
        if let error = errors.first {
            #expect(error.code == expected.code, "\(error.message)")
            #expect(error.message.contains(expected.messageContains), "\(error.message)")
            #expect(error.closing)
        }
        #expect(!offender.isOpen)

        let accepted = try await neighbour.finish()
        #expect(accepted == 40 * 50)
        #expect(try server.count("SELECT count(*) FROM readings WHERE device_id = 'neighbour-200'") == 2_000)
        #expect(try server.count("SELECT count(DISTINCT time) FROM readings WHERE device_id = 'neighbour-200'") == 2_000)
    }

    private func misbehave(_ input: BadInput, _ client: RawClient) async throws -> Expected {
        switch input {
        case .wrongPreface:
            try await client.sendBytes(Array("GET / HTTP/1.1\r\n".utf8))
            return Expected(code: .protocolError, messageContains: "preface \"SLU1\"")
        case .reservedFlagBits:
            try await client.sendPreface()
            try await client.sendRawFrame(flags: 0x04, payload: [0, 1, 2])
            return Expected(code: .protocolError, messageContains: "flags 0x04 use reserved bits")
        case .oversizedFrameBeforeHandshake:
            try await client.sendPreface()
            try await client.sendRawFrame(flags: 0, payload: [], declaredLength: 70_000)
            return Expected(code: .frameTooLarge, messageContains: "before the handshake completes")
        case .oversizedFrameAfterHandshake:
            try await client.handshake(producer: producerID(10))
            try await client.sendRawFrame(flags: 0, payload: [], declaredLength: 300_000)
            return Expected(code: .frameTooLarge, messageContains: "above the limit of 256 KiB")
        case .zstdBomb:
            try await client.handshake(producer: producerID(11))
            // 8 MiB of zeros compress to a few hundred bytes: far past the 1 MiB decompression cap.
            var batch = Batch()
            batch.seq = 1
            var series = Series()
            series.deviceID = "d"
            series.metric = "m"
            series.values = Array(repeating: 0, count: 1 << 20)
            series.timeDeltasUs = Array(repeating: 0, count: 1 << 20)
            batch.series = [series]
            try await client.send(ClientFrame(.batch(batch)), compressed: true)
            return Expected(code: .frameTooLarge, messageContains: "max_decompressed_bytes")
        case .garbageProtobufOnTheLoop:
            try await client.handshake(producer: producerID(12))
            try await client.sendRawFrame(flags: 0, payload: [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01])
            return Expected(code: .protocolError, messageContains: "not a valid sluice.v1.ClientFrame")
        case .garbageProtobufInThePipeline:
            try await client.handshake(producer: producerID(13))
            // Starts like a Batch (field 2), then lies about its length.
            try await client.sendRawFrame(flags: 0, payload: [0x12, 0x7F, 0x08, 0x01])
            return Expected(code: .protocolError, messageContains: "not a valid sluice.v1.ClientFrame")
        case .creditViolation:
            let welcome = try await client.handshake(producer: producerID(14))
            try await client.sendBatch(Readings.batch(seq: 1, count: Int(welcome.initialCredit) + 1))
            return Expected(code: .resourceExhausted, messageContains: "only 5000 credit was held")
        case .wrongToken:
            try await client.sendPreface()
            try await client.send(ClientFrame(.hello(RawClient.hello(producer: producerID(15), token: "slu_wrong"))))
            return Expected(code: .unauthenticated, messageContains: "unknown or revoked token")
        case .unsupportedProtocolVersion:
            try await client.sendPreface()
            try await client.send(ClientFrame(.hello(RawClient.hello(producer: producerID(16), version: 2))))
            return Expected(code: .unimplemented, messageContains: "protocol version 2 is not supported")
        case .batchBeforeHello:
            try await client.sendPreface()
            try await client.send(ClientFrame(.batch(Readings.batch(seq: 1, count: 1))))
            return Expected(code: .failedPrecondition, messageContains: "send Hello and wait for Welcome")
        }
    }

    @Test func deviceOutsideTheTokenScopeIsPermissionDeniedAndTheSessionGoesOn() async throws {
        let token = "slu_scoped"
        let server = try await TestServer.start(database: "srv_scope") { config in
            config.tokens = TokenTable(entries: [
                TokenEntry(id: "scoped", hashHex: SHA256.hexDigest(token), devicePrefix: "plant1.", createdAt: 0, name: "")
            ])
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(20), token: token)
        try await client.sendBatch(Readings.batch(seq: 1, device: "plant2.boiler", count: 5))
        try await client.sendBatch(Readings.batch(seq: 2, device: "plant1.boiler", count: 5))
        let (error, _) = try await client.read(until: { if case .error = $0.kind { true } else { false } })
        guard case .error(let e)? = error?.kind else {
            Issue.record("expected an Error frame")
            return
        }
        #expect(e.code == .permissionDenied)
        #expect(e.seq == 1 && !e.closing)
        #expect(e.message.contains("\"plant2.boiler\" is outside this token's scope"))
        let acks = try await client.acks(for: [2])
        #expect(acks[2]?.accepted == 5)
        #expect(try server.readingRows == 5)
        await client.close()
    }

    @Test func nanIsDeadLetteredNotAnError() async throws {
        let server = try await TestServer.start(database: "srv_nan")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(21))
        var series = SeriesBuilder(deviceID: "d1", metric: "temp")
        series.append(timeMicros: Readings.nowMicros - 1000, value: .nan)
        series.append(timeMicros: Readings.nowMicros - 999, value: 1)
        try await client.sendBatch(Readings.batch(seq: 1, series: [series.build()]))
        let ack = try await client.acks(for: [1])[1]
        #expect(ack?.accepted == 1 && ack?.rejected == 1)
        #expect(ack?.reasons.first?.code == .valueNotFinite)
        #expect(client.seenErrors.withLockedValue { $0.isEmpty })
        #expect(client.isOpen)
        await client.close()
    }

    @Test func structurallyBrokenBatchIsInvalidArgumentAndTheSessionGoesOn() async throws {
        let server = try await TestServer.start(database: "srv_broken_batch")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(22))
        var bad = Readings.batch(seq: 1, count: 3)
        bad.series[0].scaledDeltas = []
        bad.series[0].values = [1, 2]
        try await client.sendBatch(bad)
        try await client.sendBatch(Readings.batch(seq: 2, count: 3))
        let acks = try await client.acks(for: [2])
        let errors = client.seenErrors.withLockedValue { $0 }
        #expect(errors.count == 1)
        #expect(errors.first?.code == .invalidArgument && errors.first?.seq == 1 && errors.first?.closing == false)
        #expect(errors.first?.message.contains("columns must have equal length") == true)
        #expect(acks[2]?.accepted == 3)
        #expect(try server.readingRows == 3)
        await client.close()
    }

    @Test func connectionOverTheLimitIsRefusedWithUnavailable() async throws {
        let server = try await TestServer.start(database: "srv_limit") { $0.maxConnections = 1 }
        defer { Task { await server.stop() } }
        let first = try await RawClient.connect(port: server.port)
        try await first.handshake(producer: producerID(23))
        let second = try await RawClient.connect(port: server.port)
        let frames = try await second.framesUntilClosed()
        guard case .error(let e)? = frames.first?.kind else {
            Issue.record("expected an Error frame, got \(frames)")
            return
        }
        #expect(e.code == .unavailable && e.message.contains("connection limit (1) reached"))
        #expect(first.isOpen)
        await first.close()
    }

    @Test func peerSilentForThreeHeartbeatsIsDropped() async throws {
        let server = try await TestServer.start(database: "srv_heartbeat") { $0.timeouts = TestServer.fastTimeouts }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(24))
        // Read nothing (so no Pong goes back) until the server gives up (3 intervals of 1 s).
        try await Task.sleep(for: .milliseconds(4_500))
        var frames: [ServerFrame] = []
        while case .frame(let f) = client.rawTake() { frames.append(f) }
        #expect(frames.contains { if case .ping = $0.kind { true } else { false } }, "the server pinged first")
        let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("3 heartbeat intervals") == true)
    }

    @Test func peerAnsweringPingsStaysConnected() async throws {
        let server = try await TestServer.start(database: "srv_heartbeat_ok") { $0.timeouts = TestServer.fastTimeouts }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(25))
        let until = ContinuousClock.now + .milliseconds(4_000)  // past the 3 s a silent peer gets
        while ContinuousClock.now < until {
            _ = try? await client.next(timeout: .milliseconds(100))  // answers Pings
        }
        #expect(client.isOpen)
        await client.close()
    }

    @Test func halfAFrameThenSilenceIsDropped() async throws {
        // Heartbeats far apart: only the stalled frame may end this connection, even when a loaded machine
        // delays the session's ticks by seconds.
        let server = try await TestServer.start(database: "srv_stall") {
            $0.timeouts = .init(handshake: 30_000_000_000, heartbeatInterval: 20_000_000_000, frameStall: 400_000_000)
        }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(26))
        try await client.sendBytes([0, 0, 0, 0, 100, 0x12, 0x01])  // promises 100 bytes, sends 2
        // A Pong now would land inside the half frame, so the client stays silent. The session's ticks can run
        // seconds late on a loaded machine: wait long enough for the close whatever the load.
        let frames = try await client.framesUntilClosed(timeout: .seconds(60), answeringPings: false)
        let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("a frame was started and then nothing arrived") == true)
    }
}
