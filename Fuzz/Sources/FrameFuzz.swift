// libFuzzer target: the server's view of a client byte stream. Bytes go through the frame parser (prefix,
// flags, length limits), each frame through zstd + protobuf decoding, and each Batch through series expansion
// and validation, exactly as a session does. Every outcome is allowed except a crash, a hang or unbounded
// memory. Built by Fuzz/build (see docs/chaos.md); the first input byte picks the parser's situation.
import Glibc
import NIOCore
import SluiceCore
import SluiceProtocol

/// Policy and clock fixed so a crashing input replays identically.
private let policy = ValidationPolicy(maxBatchReadings: 65_536)
private let now: Int64 = 1_764_000_000_000_000

@_cdecl("LLVMFuzzerTestOneInput")
public func sluiceFuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let mode = data[0]
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data + 1, count: size - 1))
    // bit 0: the stream starts with the preface; bit 1: limits already raised by Welcome (small caps so a
    // bomb is found, not allocated); bit 2: a token scoped to devices starting with "p".
    let limits = FrameLimitsHandle(
        mode & 2 == 0 ? .handshake : FrameLimits(maxFrameBytes: 1 << 20, maxDecompressedBytes: 4 << 20))
    var parser = FrameParser(expectsPreface: mode & 1 != 0, limits: limits)
    let decompressor = ZstdDecompressor()
    do {
        while let frame = try parser.next(&buffer) {
            // As the server's pipeline does: decompress, check the batch's shape on the wire, then decode.
            var payload = frame.payload
            if frame.isCompressed {
                payload = try decompressor.decompress(payload, cap: limits.limits.maxDecompressedBytes)
            }
            let shape: FrameShape
            do {
                shape = try BatchShape.scan(payload, limits: policy.shapeLimits)
            } catch {
                continue  // refused before decoding, as the server does
            }
            let message = try FramePayload.decodeFrame(
                ClientFrame.self, from: RawFrame(flags: 0, payload: payload), decompressor: nil,
                maxDecompressedBytes: limits.limits.maxDecompressedBytes)
            if case .batch(let batch)? = message.kind {
                // What the scan let through is what the decoder built: no more series or readings, no longer ids.
                if case .batch(_, let readings, let series) = shape {
                    precondition(batch.series.count == series, "scan counted \(series) series, decoder built \(batch.series.count)")
                    precondition(BatchValidator.readingCount(of: batch) == readings, "scan and decoder disagree on readings")
                } else {
                    preconditionFailure("the decoder found a batch the scan did not")
                }
                _ = BatchValidator.readingCount(of: batch)
                // Ids and metrics over 64 bytes pass the scan (their readings are dead-lettered, DESIGN §3), but
                // never reach `readings`, and their dead letters carry a short description, not the id.
                if let validated = try? BatchValidator.validate(
                    batch, policy: policy, nowMicros: now, devicePrefix: mode & 4 == 0 ? "" : "p")
                {
                    precondition(validated.accepted.allSatisfy { $0.deviceID.utf8.count <= 64 && $0.metric.utf8.count <= 64 })
                    precondition(validated.rejected.allSatisfy { $0.deviceID.utf8.count <= 256 && $0.metric.utf8.count <= 256 })
                }
            }
        }
        try parser.leftover(buffer)
    } catch {
        // A clear WireError is the expected answer to bad input.
    }
    return 0
}

// MARK: - Seed corpus

private func write(_ seeds: [(String, UInt8, [UInt8])], to dir: String) {
    for (name, mode, bytes) in seeds {
        let data = [mode] + bytes
        guard let f = fopen(dir + "/" + name, "wb") else { continue }
        _ = data.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
        fclose(f)
    }
}

/// With `SLUICE_FUZZ_WRITE_SEEDS=DIR`, writes a seed corpus of real frames (built by the same encoder the
/// clients use) into DIR and exits: `Fuzz/build` regenerates `Fuzz/corpus/frames` this way.
@_cdecl("LLVMFuzzerInitialize")
public func sluiceFuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>>>) -> CInt {
    guard let dir = getenv("SLUICE_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) else { return 0 }
    func frames(_ list: [ClientFrame], compressed: Bool = false) -> [UInt8] {
        var buffer = ByteBuffer()
        for frame in list {
            try? FramePayload.encode(frame, into: &buffer, compressor: compressed ? ZstdCompressor() : nil, compressAbove: 0)
        }
        return Array(buffer.readableBytesView)
    }
    func batch(seq: UInt64, device: String, count: Int, decimal: Bool, quality: Bool) -> ClientFrame {
        var builder = SeriesBuilder(deviceID: device, metric: "temp")
        for i in 0..<count {
            let value = decimal ? 21.37 + Double(i % 7) / 100 : 1.0 / Double(i + 3)
            builder.append(timeMicros: now - 3_600_000_000 + Int64(i) * 1_000_000, value: value, quality: quality ? UInt32(i % 3) : 0)
        }
        var b = Batch()
        b.seq = seq
        b.series = [builder.build()]
        return ClientFrame(.batch(b))
    }
    func emptySeries(count: Int) -> ClientFrame {
        var b = Batch()
        b.seq = 6
        b.series = Array(repeating: Series(), count: count)
        return ClientFrame(.batch(b))
    }
    var hello = Hello()
    hello.protocolVersion = sluiceProtocolVersion
    hello.producerID = .init(repeating: 7, count: 16)
    hello.token = "slu_seed"
    hello.clientName = "fuzz-seed"
    var ping = Ping()
    ping.nonce = 42
    let seeds: [(String, UInt8, [UInt8])] = [
        ("hello", 1, sluicePreface + frames([ClientFrame(.hello(hello))])),
        ("batch-decimal", 2, frames([batch(seq: 1, device: "dev-1", count: 60, decimal: true, quality: false)])),
        ("batch-doubles-quality", 2, frames([batch(seq: 2, device: "dev-2", count: 20, decimal: false, quality: true)])),
        ("batch-zstd", 2, frames([batch(seq: 3, device: "dev-3", count: 200, decimal: true, quality: false)], compressed: true)),
        ("batch-scoped", 6, frames([batch(seq: 4, device: "plant.x", count: 5, decimal: true, quality: false)])),
        ("stream", 3, sluicePreface + frames([ClientFrame(.hello(hello)), ClientFrame(.ping(ping)),
            batch(seq: 1, device: "d", count: 3, decimal: true, quality: false)])),
        ("batch-long-id", 2, frames([batch(seq: 5, device: String(repeating: "L", count: 300), count: 4, decimal: true, quality: false)], compressed: true)),
        ("batch-empty-series", 2, frames([emptySeries(count: 50_000)], compressed: true)),
    ]
    write(seeds, to: dir)
    // Server frames, for libsluice's parser (Fuzz/c/fuzz_response.c): mode byte 1 = session open, 0 = handshake.
    if let responses = getenv("SLUICE_FUZZ_WRITE_RESPONSE_SEEDS").map({ String(cString: $0) }) {
        func server(_ list: [ServerFrame], compressed: Bool = false) -> [UInt8] {
            var buffer = ByteBuffer()
            for frame in list {
                try? FramePayload.encode(frame, into: &buffer, compressor: compressed ? ZstdCompressor() : nil, compressAbove: 0)
            }
            return Array(buffer.readableBytesView)
        }
        var welcome = Welcome()
        welcome.protocolVersion = 1
        welcome.sessionID = 9
        welcome.initialCredit = 5000
        welcome.maxBatchReadings = 65_536
        welcome.maxFrameBytes = 4 << 20
        welcome.maxDecompressedBytes = 32 << 20
        welcome.heartbeatIntervalMs = 5000
        welcome.committedSeq = 1
        func ack(_ seq: UInt64, duplicate: Bool = false) -> ServerFrame {
            var a = Ack()
            a.seq = seq
            a.accepted = 1
            a.rejected = 1
            var r = Rejection()
            r.index = 1
            r.code = .valueNotFinite
            r.message = "value is NaN"
            a.reasons = [r]
            a.duplicate = duplicate
            return ServerFrame(.ack(a))
        }
        var credit = Credit()
        credit.readings = 1000
        var error = ErrorFrame()
        error.code = .invalidArgument
        error.message = "batch 2: columns must have equal length"
        error.seq = 2
        var closing = error
        closing.closing = true
        closing.code = .resourceExhausted
        var goAway = GoAway()
        goAway.reason = "server draining"
        goAway.reconnectAfterMs = 1000
        var ping = Ping()
        ping.nonce = 5
        write(
            [
                ("welcome", 0, server([ServerFrame(.welcome(welcome))])),
                ("welcome-then-acks", 0, server([ServerFrame(.welcome(welcome)), ack(2), ack(3)])),
                ("acks-credit", 1, server([ack(1), ack(2, duplicate: true), ServerFrame(.credit(credit)), ack(3)])),
                ("error", 1, server([ServerFrame(.error(error)), ack(3)])),
                ("error-closing", 1, server([ServerFrame(.error(closing))])),
                ("goaway-ping", 1, server([ServerFrame(.ping(ping)), ServerFrame(.goAway(goAway)), ack(1)])),
                ("zstd-ack", 1, server([ack(1), ack(2)], compressed: true)),
            ], to: responses)
    }
    exit(0)
}
