import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore
import SluiceProtocol
import SluiceTestSupport
import Testing

/// Every kind of hostile client at once against the real `sluiced`, while a healthy client streams a known
/// set of readings: the healthy client's readings all land exactly once, the daemon's memory stays bounded,
/// and the attack costs the healthy client little throughput. Prints the figures (`chaos:` lines).
@Suite struct HostileClientTests {
    /// Idle connections held open during the attack (`SLUICE_CHAOS_IDLE` overrides; `tools/chaos --idle`).
    static var idleConnections: Int {
        ProcessInfo.processInfo.environment["SLUICE_CHAOS_IDLE"].flatMap(Int.init) ?? 2_000
    }

    @Test func healthyClientLandsExactlyOnceWhileEveryKindOfHostileClientAttacks() async throws {
        let url = try await TestDatabase.freshDatabase(named: "chaos_hostile")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-chaos-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let healthyToken = "slu_chaos_healthy"
        let scopedToken = "slu_chaos_scoped"
        let doomedToken = "slu_chaos_doomed"
        let kept = [
            TokenEntry(id: "healthy", hashHex: SHA256.hexDigest(healthyToken), devicePrefix: "", createdAt: 0, name: ""),
            TokenEntry(id: "scoped", hashHex: SHA256.hexDigest(scopedToken), devicePrefix: "plant1.", createdAt: 0, name: ""),
        ]
        let tokens = TokenTable(entries: kept + [
            TokenEntry(id: "doomed", hashHex: SHA256.hexDigest(doomedToken), devicePrefix: "", createdAt: 0, name: "")
        ])
        try tokens.serialized().write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)

        let (daemon, port) = try await SluicedProcess.start([
            "--listen", "127.0.0.1:0", "--http", "off", "--database-url", url, "--token-file", dir + "/tokens",
            "--log-level", "error", "--state-dir", dir, "--max-connections", "\(Self.idleConnections + 1_000)",
        ])
        defer { daemon.kill() }
        let memory = PeakMemory(pid: daemon.pid)

        // Baseline: the healthy client alone.
        let batches = 300
        let size = 500
        let cpuStart = memory.cpuSeconds()
        let quiet = try await HealthyStream.run(port: port, producer: 1, token: healthyToken, device: "healthy.quiet", batches: batches, size: size)
        let rssBefore = memory.sample()
        let cpuQuiet = memory.cpuSeconds() - cpuStart

        // The attack, then the healthy client again while it goes on.
        let attack = HostileCrowd(port: port, idle: Self.idleConnections, token: healthyToken, scopedToken: scopedToken, seed: 9)
        let openStart = ContinuousClock.now
        try await attack.openIdle()
        let openTime = ContinuousClock.now - openStart
        if let settle = ProcessInfo.processInfo.environment["SLUICE_CHAOS_SETTLE"].flatMap(Double.init) {
            try await Task.sleep(for: .seconds(settle))
        }
        let attackers = Task { try await attack.misbehave() }
        // A session whose token is revoked mid-attack (token file rewritten, SIGHUP): closed with UNAUTHENTICATED.
        let doomed = try await RawClient.connect(port: port)
        try await doomed.handshake(producer: producerID(160), token: doomedToken)
        let revocation = Task { () throws -> Duration? in
            try await Task.sleep(for: .seconds(1))
            try TokenTable(entries: kept).serialized().write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
            let start = ContinuousClock.now
            daemon.signal(SIGHUP)
            let frames = try await doomed.framesUntilClosed(timeout: .seconds(30))
            let closedAfter = ContinuousClock.now - start
            let error = frames.compactMap { if case .error(let e)? = $0.kind { e } else { nil } }.first
            return error?.code == .unauthenticated && error?.closing == true ? closedAfter : nil
        }
        let sampler = Task {
            while !Task.isCancelled {
                memory.sample()
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        let cpuAttackStart = memory.cpuSeconds()
        let attacked = try await HealthyStream.run(
            port: port, producer: 2, token: healthyToken, device: "healthy.attacked", batches: batches, size: size)
        let cpuAttacked = memory.cpuSeconds() - cpuAttackStart
        let outcomes = try await attackers.value
        let revokedAfter = try await revocation.value
        sampler.cancel()
        memory.sample()
        await attack.closeAll()

        // Exactly once, nothing from the attackers' bad batches.
        let db = try TestConnection(url: url)
        for device in ["healthy.quiet", "healthy.attacked"] {
            #expect(try db.scalar("SELECT count(*) FROM readings WHERE device_id = '\(device)'") == batches * size, "\(device)")
            #expect(
                try db.scalar("SELECT count(*) FROM (SELECT DISTINCT time FROM readings WHERE device_id = '\(device)') t")
                    == batches * size, "\(device): duplicates")
        }
        #expect(try db.scalar("SELECT count(*) FROM readings WHERE device_id LIKE 'plant2.%'") == 0, "out-of-scope device written")
        #expect(try db.scalar("SELECT count(*) FROM readings WHERE device_id LIKE 'bad.%'") == 0, "a violating batch was written")
        // Every hostile client got the treatment it earned.
        #expect(outcomes.scopeDenied, "the out-of-scope batch was not refused with PERMISSION_DENIED")
        #expect(outcomes.closedByServer >= outcomes.expectedClosures, "\(outcomes)")
        #expect(outcomes.floodAcked == outcomes.floodSent, "\(outcomes)")
        #expect(outcomes.longIDRefused == HostileCrowd.longIDAttackers, "\(outcomes)")
        #expect(outcomes.emptySeriesRefused == HostileCrowd.emptySeriesAttackers, "\(outcomes)")
        #expect(outcomes.takeoverDenied, "\(outcomes)")
        #expect(outcomes.ownerUnaffected, "\(outcomes)")
        #expect(outcomes.longTokenRefused == HostileCrowd.longTokenAttackers, "\(outcomes)")
        #expect(outcomes.preauthRefused >= Self.idleConnections - 64, "\(outcomes)")
        #expect(revokedAfter != nil, "the revoked session was not closed with UNAUTHENTICATED")
        #expect(
            try db.scalar("SELECT count(*) FROM dead_letters WHERE device_id LIKE '\"LLLLLLLLLLLLLLLL…\" (524288 bytes, fnv1a %'")
                == HostileCrowd.longIDAttackers * 1_000, "long-id readings not dead-lettered once each")
        #expect(try db.scalar("SELECT max(length(device_id)) FROM dead_letters") < 64, "a dead letter carries a long id")
        #expect(try db.scalar("SELECT count(*) FROM producer_owners WHERE token_id = 'healthy'") >= 2)
        let exited = try? await daemon.waitForExit(timeout: .milliseconds(10))
        #expect(exited == nil, "sluiced exited (status \(exited.map { "\($0)" } ?? "-")): it must never restart")

        let peakMiB = Double(memory.peakKiB) / 1024
        let ratio = attacked.readingsPerSecond / quiet.readingsPerSecond
        print(
            "chaos: hostile clients: \(Self.idleConnections) idle connections (opened in \(openTime)) + \(outcomes); "
                + "sluiced peak RSS (VmHWM) \(String(format: "%.1f", peakMiB)) MiB (before the attack \(String(format: "%.1f", Double(rssBefore) / 1024)) MiB); "
                + "healthy throughput \(Int(quiet.readingsPerSecond)) readings/s alone, \(Int(attacked.readingsPerSecond)) under attack "
                + "(\(Int(ratio * 100))%); healthy p99 ack latency \(String(format: "%.1f", quiet.p99AckSeconds * 1000)) ms alone, "
                + "\(String(format: "%.1f", attacked.p99AckSeconds * 1000)) ms under attack; sluiced CPU while the healthy client streamed: \(String(format: "%.2f", cpuQuiet)) s alone, "
                + "\(String(format: "%.2f", cpuAttacked)) s under attack; lost 0, duplicated 0 of \(2 * batches * size); "
                + "revoked session closed \(revokedAfter.map { "\($0)" } ?? "never") after SIGHUP; "
                + "RSS after the attack \(String(format: "%.1f", Double(memory.current()) / 1024)) MiB")
        #expect(peakMiB < 256, "sluiced peak RSS \(peakMiB) MiB above the 256 MiB bar")
    }
}

/// VmHWM (peak resident set) of a process, read from /proc.
final class PeakMemory: Sendable {
    let pid: Int32
    private let peak = NIOLockedValueBox(0)
    init(pid: Int32) { self.pid = pid }

    /// Reads VmHWM now; returns it in KiB (0 if the process is gone).
    @discardableResult
    func sample() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        peak.withLockedValue { $0 = max($0, kib) }
        return kib
    }

    var peakKiB: Int { peak.withLockedValue { $0 } }

    /// VmRSS now, KiB.
    func current() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib
    }

    /// User + system CPU seconds the process has used so far (from /proc/PID/stat).
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// A well-behaved producer: keeps as many batches in flight as its credit allows and waits for every ack.
enum HealthyStream {
    struct Result {
        var readingsPerSecond: Double
        /// 99th percentile from sending a batch to this client taking its ack, seconds.
        var p99AckSeconds: Double
    }

    static func run(port: Int, producer: UInt8, token: String, device: String, batches: Int, size: Int) async throws -> Result {
        let client = try await RawClient.connect(port: port)
        defer { Task { await client.close() } }
        try await client.handshake(producer: producerID(producer), token: token)
        let start = ContinuousClock.now
        var sentAt: [UInt64: ContinuousClock.Instant] = [:]
        for seq in 1...UInt64(batches) {
            while client.held.withLockedValue({ $0 }) < size {
                guard try await client.next(timeout: .seconds(30)) != nil else {
                    throw TestSetupError("the healthy client was disconnected: \(client.seenErrors.withLockedValue { $0 })")
                }
            }
            sentAt[seq] = ContinuousClock.now
            try await client.sendBatch(Readings.batch(seq: seq, device: device, count: size))
        }
        let acks = try await client.acks(for: Set(1...UInt64(batches)), timeout: .seconds(60))
        let elapsed = ContinuousClock.now - start
        let accepted = acks.values.reduce(0) { $0 + Int($1.accepted) }
        guard accepted == batches * size, acks.values.allSatisfy({ !$0.duplicate }) else {
            throw TestSetupError("healthy client: \(accepted) of \(batches * size) accepted")
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let ackedAt = client.ackTimes.withLockedValue { $0 }
        let latencies = sentAt.compactMap { seq, sent in ackedAt[seq].map { $0 - sent } }.sorted()
        let p99 = latencies.isEmpty ? .zero : latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
        let p99Seconds = Double(p99.components.seconds) + Double(p99.components.attoseconds) / 1e18
        return Result(readingsPerSecond: Double(accepted) / seconds, p99AckSeconds: p99Seconds)
    }
}

/// The attackers: idle sockets, slowloris, a flood of tiny frames, credit violations, lying lengths, zstd bombs,
/// random bytes after a valid handshake, a token used outside its scope.
final class HostileCrowd: Sendable {
    struct Outcomes: Sendable, CustomStringConvertible {
        var expectedClosures = 0
        var closedByServer = 0
        var floodSent = 0
        var floodAcked = 0
        var scopeDenied = false
        var longIDRefused = 0
        var emptySeriesRefused = 0
        var takeoverDenied = false
        var ownerUnaffected = false
        var longTokenRefused = 0
        var preauthRefused = 0
        var summary = ""
        var description: String {
            "\(summary); closed by server \(closedByServer)/\(expectedClosures), flood acked \(floodAcked)/\(floodSent), "
                + "long-id batches dead-lettered in short form \(longIDRefused), empty-series frames refused \(emptySeriesRefused), takeover denied \(takeoverDenied) "
                + "(owner unaffected \(ownerUnaffected)), long tokens refused \(longTokenRefused), idle sockets closed by the server (refused at accept, or at the handshake deadline) \(preauthRefused)"
        }
    }

    let port: Int
    let idle: Int
    let scopedToken: String
    /// A valid token with every device in scope: the attackers are authenticated, then misbehave.
    let token: String
    let seed: UInt64
    private let idleChannels = NIOLockedValueBox<[any Channel]>([])
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    init(port: Int, idle: Int, token: String, scopedToken: String, seed: UInt64) {
        self.token = token
        self.port = port
        self.idle = idle
        self.scopedToken = scopedToken
        self.seed = seed
    }

    static let longIDAttackers = 5
    static let emptySeriesAttackers = 5
    static let longTokenAttackers = 200

    /// Opens `idle` TCP connections from 127.0.0.2 (one source address, not the healthy client's); every
    /// other one sends the preface and nothing more. sluiced keeps at most its per-address cap of them
    /// (`--max-unauthenticated-per-address`, 64) and refuses the rest at accept.
    func openIdle() async throws {
        let bootstrap = ClientBootstrap(group: group).bind(to: try SocketAddress(ipAddress: "127.0.0.2", port: 0))
        var opened: [any Channel] = []
        for i in 0..<idle {
            let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
            // The server may already have refused it (the per-address cap): a failed write is expected then.
            if i % 2 == 0 { channel.writeAndFlush(channel.allocator.buffer(bytes: sluicePreface), promise: nil) }
            opened.append(channel)
        }
        idleChannels.withLockedValue { $0 = opened }
    }

    func closeAll() async {
        for channel in idleChannels.withLockedValue({ $0 }) { try? await channel.close() }
        try? await group.shutdownGracefully()
    }

    func misbehave() async throws -> Outcomes {
        var rng = SplitMix64(seed: seed)
        var out = Outcomes()
        var closers: [Task<Bool, any Error>] = []
        var kinds: [String: Int] = [:]

        // Slowloris: a valid session, then half a frame and silence (the server's frame-stall deadline ends it).
        for i in 0..<20 {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(10 + i)), token: token)
            try await c.sendBytes([0, 0, 0, 0x10, 0, 0x12, 0x01])
            kinds["slowloris", default: 0] += 1
            _ = c  // left open until the end; the server closes it after its stall deadline
            closers.append(Task { try await Self.closedByServer(c, timeout: .seconds(40), answeringPings: false) })
        }
        // Credit violations.
        for i in 0..<10 {
            let c = try await RawClient.connect(port: port)
            let welcome = try await c.handshake(producer: producerID(UInt8(40 + i)), token: token)
            try await c.sendBatch(Readings.batch(seq: 1, device: "bad.credit", count: Int(welcome.initialCredit) + 1))
            kinds["credit violation", default: 0] += 1
            closers.append(Task { try await Self.closedByServer(c) })
        }
        // Lying lengths: more than the limit; and a length that promises more than is sent, then a new frame.
        for i in 0..<10 {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(60 + i)), token: token)
            if i % 2 == 0 {
                try await c.sendRawFrame(flags: 0, payload: [], declaredLength: UInt32.max)
            } else {
                // Says 3 bytes, carries a whole batch: the decoder sees garbage where the next prefix should be.
                var batch = Readings.batch(seq: 1, device: "bad.length", count: 5)
                batch.seq = 1
                let bytes = try ClientFrame(.batch(batch)).serializedBytes() as [UInt8]
                try await c.sendRawFrame(flags: 0, payload: bytes, declaredLength: 3)
            }
            kinds["lying length", default: 0] += 1
            closers.append(Task { try await Self.closedByServer(c) })
        }
        // Zstd bombs: 8 MiB of zeros in a few hundred bytes.
        for i in 0..<5 {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(80 + i)), token: token)
            var batch = Batch()
            batch.seq = 1
            var series = Series()
            series.deviceID = "bad.bomb"
            series.metric = "m"
            series.values = Array(repeating: 0, count: 1 << 20)
            series.timeDeltasUs = Array(repeating: 0, count: 1 << 20)
            batch.series = [series]
            try await c.send(ClientFrame(.batch(batch)), compressed: true)
            kinds["zstd bomb", default: 0] += 1
            closers.append(Task { try await Self.closedByServer(c) })
        }
        // Random bytes after a valid handshake.
        for i in 0..<20 {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(100 + i)), token: token)
            let noise = (0..<Int.random(in: 64...4096, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            try await c.sendBytes(noise)
            kinds["random bytes", default: 0] += 1
            closers.append(Task { try await Self.closedByServer(c, timeout: .seconds(40)) })
        }
        // Huge device ids: a 512 KiB id on 1,000 readings. Dead-lettered under a short description of the id
        // (its first 16 bytes, length and hash), never the id; the session goes on.
        for i in 0..<Self.longIDAttackers {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(170 + i)), token: token)
            // Waits for (and asks for) its credit like a correct client: the attack is the id, not the credit.
            try await c.sendBatchWhenCredit(
                Readings.batch(seq: 1, device: String(repeating: "L", count: 512 << 10), count: 1_000), compressed: true)
            let acks = try await c.acks(for: [1], timeout: .seconds(60))
            if acks[1]?.rejected == 1_000, acks[1]?.reasons.allSatisfy({ $0.message.utf8.count < 200 }) == true { out.longIDRefused += 1 }
            await c.close()
        }
        kinds["512 KiB device id", default: 0] += Self.longIDAttackers
        // A million empty series in one small zstd frame.
        for i in 0..<Self.emptySeriesAttackers {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(UInt8(180 + i)), token: token)
            try await c.sendRawFrame(flags: RawFrame.zstdFlag, payload: Self.emptySeriesFrame(count: 1_000_000))
            let (error, _) = try await c.read(until: { if case .error = $0.kind { true } else { false } }, timeout: .seconds(60))
            if case .error(let e)? = error?.kind, e.code == .invalidArgument { out.emptySeriesRefused += 1 }
            await c.close()
        }
        kinds["1,000,000 empty series", default: 0] += Self.emptySeriesAttackers
        // Takeover: another token says Hello with a producer id the healthy token owns.
        let owner = try await RawClient.connect(port: port)
        try await owner.handshake(producer: producerID(190), token: token)
        let thief = try await RawClient.connect(port: port)
        try await thief.sendPreface()
        try await thief.send(ClientFrame(.hello(RawClient.hello(producer: producerID(190), token: scopedToken))))
        let thiefFrames = try await thief.framesUntilClosed(timeout: .seconds(30))
        out.takeoverDenied = thiefFrames.contains { if case .error(let e)? = $0.kind { e.code == .permissionDenied } else { false } }
        try await owner.sendBatchWhenCredit(Readings.batch(seq: 1, device: "owner.dev", count: 10), timeout: .seconds(60))
        let ownerAcks = try await owner.acks(for: [1], timeout: .seconds(60))
        out.ownerUnaffected = ownerAcks[1]?.accepted == 10
        await owner.close()
        kinds["takeover attempt", default: 0] += 1
        // Long tokens: 60 KiB each, 20 at a time. UNAUTHENTICATED, never hashed.
        for round in 0..<(Self.longTokenAttackers / 20) {
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<20 {
                    group.addTask { [port] in
                        let c = try await RawClient.connect(port: port)
                        try await c.sendPreface()
                        let long = String(repeating: "k", count: 60_000 + round * 20 + i)
                        try await c.send(ClientFrame(.hello(RawClient.hello(producer: producerID(200), token: long))))
                        let frames = try await c.framesUntilClosed(timeout: .seconds(30))
                        return frames.contains { if case .error(let e)? = $0.kind { e.code == .unauthenticated } else { false } }
                    }
                }
                var ok = 0
                for try await r in group where r { ok += 1 }
                return ok
            }
            out.longTokenRefused += results
        }
        kinds["60 KiB token", default: 0] += Self.longTokenAttackers
        out.preauthRefused = idleChannels.withLockedValue { $0 }.filter { !$0.isActive }.count

        // A token used for devices outside its scope: refused, the session goes on.
        let scoped = try await RawClient.connect(port: port)
        try await scoped.handshake(producer: producerID(130), token: scopedToken)
        try await scoped.sendBatch(Readings.batch(seq: 1, device: "plant2.boiler", count: 10))
        let (denied, _) = try await scoped.read(until: { if case .error = $0.kind { true } else { false } })
        if case .error(let e)? = denied?.kind, e.code == .permissionDenied, !e.closing { out.scopeDenied = true }
        await scoped.close()
        kinds["out-of-scope token", default: 0] += 1

        // A flood of tiny frames: thousands of Pings and 1-reading batches in a few writes.
        let flood = try await RawClient.connect(port: port)
        try await flood.handshake(producer: producerID(140), token: token)
        var sent = 0
        for round in 0..<20 {
            var buffer = ByteBuffer()
            for n in 0..<500 {
                var ping = Ping()
                ping.nonce = UInt64(round * 1000 + n)
                try FramePayload.encode(ClientFrame(.ping(ping)), into: &buffer, compressor: nil, compressAbove: 0)
            }
            // 1-reading batches within credit.
            let count = min(100, flood.held.withLockedValue { $0 })
            for _ in 0..<count {
                sent += 1
                let batch = Readings.batch(seq: UInt64(sent), device: "flood.tiny", count: 1)
                flood.held.withLockedValue { $0 -= 1 }
                try FramePayload.encode(ClientFrame(.batch(batch)), into: &buffer, compressor: nil, compressAbove: 0)
            }
            try await flood.sendBytes(Array(buffer.readableBytesView))
            // Waits for an ack that frees credit; a loaded machine may take longer than a moment to send one,
            // and no frame in time only means the loop asks again (the acks are counted below).
            while let frame = try? await flood.next(timeout: .seconds(2)), !Self.isAck(frame) {}
        }
        let floodAcks = try await flood.acks(for: Set(1...UInt64(max(sent, 1))), timeout: .seconds(30))
        out.floodSent = sent
        out.floodAcked = sent == 0 ? 0 : floodAcks.count
        await flood.close()
        kinds["tiny-frame flood (10,000 pings + \(sent) 1-reading batches)", default: 0] += 1

        out.expectedClosures = closers.count
        for closer in closers where try await closer.value { out.closedByServer += 1 }
        out.summary = kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        return out
    }

    /// A zstd frame holding `ClientFrame { batch { seq 1, series × count, each empty } }`.
    static func emptySeriesFrame(count: Int) -> [UInt8] {
        func varint(_ value: Int) -> [UInt8] {
            var v = value
            var out: [UInt8] = []
            while v >= 0x80 {
                out.append(UInt8(v & 0x7f) | 0x80)
                v >>= 7
            }
            return out + [UInt8(v)]
        }
        var batch: [UInt8] = [0x08, 0x01]
        batch.reserveCapacity(2 + 2 * count)
        for _ in 0..<count { batch += [0x12, 0x00] }
        return Array(ZstdCompressor().compress([0x12] + varint(batch.count) + batch).readableBytesView)
    }

    private static func isAck(_ frame: ServerFrame) -> Bool {
        if case .ack = frame.kind { return true }
        return false
    }

    /// Whether the server closed `client` within `timeout` (after an Error frame or not).
    private static func closedByServer(
        _ client: RawClient, timeout: Duration = .seconds(15), answeringPings: Bool = true
    ) async throws -> Bool {
        do {
            _ = try await client.framesUntilClosed(timeout: timeout, answeringPings: answeringPings)
            return true
        } catch {
            await client.close()
            return false
        }
    }
}
