import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore
import SluiceProtocol
import SluiceStore
import SluiceTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The faults of issue 14, at CI size, against the real `sluiced`, each injected mid-stream while many producers
/// stream a seeded set. Tested from the invariant (DESIGN §2), not from what the code does today:
///
/// - every reading sent is exactly once in `readings` or exactly once in `dead_letters` (with a reason);
/// - every ack matches what is stored (accepted = rows in `readings` for that producer and seq, rejected =
///   rows in `dead_letters`), and no batch is answered with an Error for a fault that is not about its data
///   (a refusal is dead-lettered, a read-only database stalls: DESIGN §2 "a batch is never failed and skipped");
/// - every producer finishes within `bound` seconds.
///
/// The producers are this file's own client (`FaultProducer`): it keeps every unacked batch, reconnects after
/// any error or close and resends them in seq order, drops those at or below `Welcome.committed_seq`, and asks
/// for credit with `CreditRequest` when the server says it reads them. Sizes come from the environment, so
/// `tools/chaos --refuse/--read-only/--storm` runs the same code at full size.
///
/// Nested in `KillRestartChaosTests` (serialized), so it never runs alongside `tools/chaos`.
extension KillRestartChaosTests {
@Suite struct DeliveryFaultChaosTests {
    static func env(_ name: String, _ fallback: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? fallback
    }

    /// A CHECK constraint (`value < 1e12`) and then a trigger that RAISEs for such values are each added and
    /// dropped while 24 producers stream 30 batches each; about one batch in three holds one such value. Batches
    /// of 60 readings fit the smallest first window (64), so this test fails for refusals, not for credit.
    @Test func refuse() async throws {
        let run = FaultRun(
            fault: .refuse, tag: "refuse", producers: Self.env("SLUICE_CHAOS_PRODUCERS", 24),
            batches: Self.env("SLUICE_CHAOS_BATCHES", 30), readingsPerBatch: Self.env("SLUICE_CHAOS_BATCH_READINGS", 60),
            cycles: Self.env("SLUICE_CHAOS_CYCLES", 2), bound: Double(Self.env("SLUICE_CHAOS_BOUND", 45)),
            seed: UInt64(Self.env("SLUICE_CHAOS_SEED", 14)))
        let report = try await run.run()
        report.expectClean()
    }

    /// `ALTER SYSTEM SET default_transaction_read_only = on` + `pg_reload_conf()` (a demoted primary) for a few
    /// seconds while 24 producers stream, then off again; on a cluster of the test's own.
    @Test func readOnly() async throws {
        let run = FaultRun(
            fault: .readOnly, tag: "readonly", producers: Self.env("SLUICE_CHAOS_PRODUCERS", 24),
            batches: Self.env("SLUICE_CHAOS_BATCHES", 30), readingsPerBatch: Self.env("SLUICE_CHAOS_BATCH_READINGS", 60),
            cycles: Self.env("SLUICE_CHAOS_CYCLES", 1), bound: Double(Self.env("SLUICE_CHAOS_BOUND", 45)),
            seed: UInt64(Self.env("SLUICE_CHAOS_SEED", 14)))
        let report = try await run.run()
        report.expectClean()
    }

    /// kill -9 of `sluiced` while 200 producers (1,000 in `tools/chaos --storm`) each hold a 1,000-reading batch,
    /// then a restart on the same port: every producer reconnects at once and must be acked within the bound.
    @Test func storm() async throws {
        let run = FaultRun(
            fault: .storm, tag: "storm", producers: Self.env("SLUICE_CHAOS_STORM_PRODUCERS", 200),
            batches: 1, readingsPerBatch: 1_000, cycles: 1, bound: Double(Self.env("SLUICE_CHAOS_BOUND", 45)),
            seed: UInt64(Self.env("SLUICE_CHAOS_SEED", 14)))
        let report = try await run.run()
        report.expectClean()
    }
}
}

// MARK: - The run

enum FaultKind: String, Sendable { case refuse, readOnly = "read-only", storm }

/// Signals between the fault schedule and the producers.
final class FaultSignals: Sendable {
    /// Batches above `gateSeq` wait until every fault was injected and removed, so each fault hits a live stream.
    let gateOpen = NIOLockedValueBox(false)
    let faultActive = NIOLockedValueBox(false)
    let acked = NIOLockedValueBox(0)
    let handshakes = NIOLockedValueBox(0)
    /// Batches answered (ack or error) while a fault was active.
    let answeredDuringFault = NIOLockedValueBox(0)
    let sentDuringFault = NIOLockedValueBox(0)
}

struct ProducerPlan: Sendable {
    var index: Int
    var producer: [UInt8]
    var device: String
    var batches: [Batch]
    var count: Int
}

struct ProducerResult: Sendable {
    var index: Int
    var acks: [UInt64: Ack] = [:]
    var errors: [String] = []
    var settled: [UInt64] = []
    var connects = 0
    var finishedAfter: Double?
    var unacked: [UInt64] = []
    var held = 0
}

struct FaultRun: Sendable {
    let fault: FaultKind
    let tag: String
    let producers: Int
    let batches: Int
    let readingsPerBatch: Int
    let cycles: Int
    let bound: Double
    let seed: UInt64

    /// Readings are dated two days ago; a reading's time is `base + seq × 1 s + index µs`, so the stored rows
    /// say which batch they came from.
    let base: Int64 = (Readings.nowMicros / 1_000_000 - 2 * 86_400) * 1_000_000
    static let refusedValue = 5e12

    func plans() -> [ProducerPlan] {
        var rng = SplitMix64(seed: seed)
        return (0..<producers).map { p in
            var id = [UInt8](repeating: 0, count: 16)
            for (i, byte) in Array("chaos-\(tag)".utf8).prefix(12).enumerated() { id[i] = byte }
            id[12] = UInt8(p >> 8 & 0xff); id[13] = UInt8(p & 0xff); id[14] = 0xc4; id[15] = UInt8(seed & 0xff)
            let device = "fx-\(tag)-p\(p)"
            var level = Double(Int.random(in: 1_000...3_000, using: &rng)) / 100
            let batchList = (1...batches).map { seq -> Batch in
                var builder = SeriesBuilder(deviceID: device, metric: "temp", reservingCapacity: readingsPerBatch)
                let refusedIndex = fault == .refuse && Int.random(in: 0..<3, using: &rng) == 0
                    ? Int.random(in: 0..<readingsPerBatch, using: &rng) : -1
                for i in 0..<readingsPerBatch {
                    level += Double(Int.random(in: -5...5, using: &rng)) / 100
                    builder.append(timeMicros: base + Int64(seq) * 1_000_000 + Int64(i), value: i == refusedIndex ? Self.refusedValue : level)
                }
                return Readings.batch(seq: UInt64(seq), series: [builder.build()])
            }
            return ProducerPlan(index: p, producer: id, device: device, batches: batchList, count: readingsPerBatch)
        }
    }

    func run() async throws -> FaultReport {
        let dir = NSTemporaryDirectory() + "sluice-chaos-\(tag)-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // read-only changes the whole cluster's configuration: a cluster of its own. The others use a fresh
        // database on the suite's cluster.
        var cluster: PostgresCluster?
        let url: String
        if fault == .readOnly {
            let environment = ProcessInfo.processInfo.environment
            var logger = Logger(label: "chaos-pg")
            logger.logLevel = .error
            let own = PostgresCluster(
                dataDirectory: dir + "/pg", port: nil, binDirectory: environment["SLUICE_TEST_PG_BINDIR"],
                runAsUser: environment["SLUICE_TEST_PG_USER"], logger: logger)
            try await own.start()
            cluster = own
            url = own.url
        } else {
            url = try await TestDatabase.freshDatabase(named: "chaos_\(tag)")
        }
        let arguments = { (listen: String) in
            ["--listen", listen, "--http", "off", "--database-url", url, "--state-dir", dir + "/state", "--log-level", "error",
             "--max-connections", "\(producers + 100)",
             // Every producer reconnects from 127.0.0.1 at once after the kill; the pre-auth caps would refuse
             // most of them (they retry, but the bound below is for the credit path, not for backoff).
             "--max-unauthenticated", "\(producers + 100)", "--max-unauthenticated-per-address", "\(producers + 100)"]
        }
        var (daemon, firstPort) = try await SluicedProcess.start(arguments("127.0.0.1:0"))
        let port = firstPort
        let daemonBox = NIOLockedValueBox(daemon)
        defer {
            daemonBox.withLockedValue { $0.kill() }
        }
        let admin = try TestConnection(url: url)
        /// DDL on `readings` can deadlock with the writers' COPY (PostgreSQL then cancels one side): the fault
        /// is injected again, up to 20 times, as an operator would.
        func ddl(_ sql: String) async throws {
            for attempt in 1...20 {
                do {
                    try admin.query(sql)
                    return
                } catch where attempt < 20 && "\(error)".contains("deadlock detected") {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        let signals = FaultSignals()
        let plans = plans()
        let gateSeq = UInt64(max(1, batches * 7 / 10))
        let start = ContinuousClock.now
        let deadline = start + .seconds(bound)
        var injected: [String] = []
        var stormRestart: ContinuousClock.Instant?

        let results = try await withThrowingTaskGroup(of: ProducerResult.self) { group in
            for plan in plans {
                group.addTask {
                    await FaultProducer(plan: plan, port: port, signals: signals, gateSeq: fault == .storm ? .max : gateSeq, start: start, deadline: deadline).run()
                }
            }
            func waitFor(_ what: String, timeout: Double, _ condition: () -> Bool) async throws {
                let until = ContinuousClock.now + .seconds(timeout)
                while !condition() && ContinuousClock.now < until { try await Task.sleep(for: .milliseconds(50)) }
            }
            switch fault {
            case .storm:
                // Every producer connected and holds its 1,000-reading batch (sent or waiting for credit).
                try await waitFor("handshakes", timeout: 20) { signals.handshakes.withLockedValue { $0 } >= producers }
                daemon.signal(SIGKILL)
                _ = try? await daemon.waitForExit(timeout: .seconds(10))
                injected.append("kill -9 with \(signals.handshakes.withLockedValue { $0 }) producers connected, \(signals.acked.withLockedValue { $0 }) acked")
                (daemon, _) = try await SluicedProcess.start(arguments("127.0.0.1:\(port)"))
                daemonBox.withLockedValue { $0 = daemon }
                stormRestart = .now
            case .refuse, .readOnly:
                let total = producers * batches
                for cycle in 0..<cycles {
                    let at = Int(Double(total) * (0.15 + 0.4 * Double(cycle) / Double(max(1, cycles))))
                    try await waitFor("acks", timeout: bound / 2) { signals.acked.withLockedValue { $0 } >= at }
                    signals.answeredDuringFault.withLockedValue { $0 = 0 }
                    signals.sentDuringFault.withLockedValue { $0 = 0 }
                    let what: String
                    if fault == .refuse {
                        if cycle % 2 == 0 {
                            try admin.query("SET lock_timeout = '20s'")
                            try await ddl("ALTER TABLE readings ADD CONSTRAINT chaos_refuse CHECK (value < 1e12) NOT VALID")
                            what = "CHECK (value < 1e12)"
                        } else {
                            try admin.query("""
                                CREATE OR REPLACE FUNCTION chaos_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                                BEGIN IF NEW.value >= 1e12 THEN RAISE EXCEPTION 'chaos: value % refused', NEW.value; END IF; RETURN NEW; END $$
                                """)
                            try await ddl("CREATE TRIGGER chaos_refuse BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION chaos_refuse()")
                            what = "trigger RAISE for value >= 1e12"
                        }
                    } else {
                        try admin.query("ALTER SYSTEM SET default_transaction_read_only = on")
                        try admin.query("SELECT pg_reload_conf()")
                        what = "default_transaction_read_only = on"
                    }
                    signals.faultActive.withLockedValue { $0 = true }
                    // Held until the stream has met it: enough batches sent and answered (or stalled) under it.
                    try await waitFor("fault met", timeout: 10) {
                        signals.sentDuringFault.withLockedValue { $0 } >= producers
                            && (fault == .readOnly || signals.answeredDuringFault.withLockedValue { $0 } >= producers / 2)
                    }
                    if fault == .readOnly { try await Task.sleep(for: .seconds(2)) }
                    if fault == .refuse {
                        if cycle % 2 == 0 {
                            try await ddl("ALTER TABLE readings DROP CONSTRAINT chaos_refuse")
                        } else {
                            try await ddl("DROP TRIGGER chaos_refuse ON readings")
                        }
                    } else {
                        try admin.query("SET default_transaction_read_only = off")
                        try admin.query("ALTER SYSTEM RESET default_transaction_read_only")
                        try admin.query("SELECT pg_reload_conf()")
                    }
                    signals.faultActive.withLockedValue { $0 = false }
                    injected.append("\(what) for \(signals.sentDuringFault.withLockedValue { $0 }) batches sent")
                }
                signals.gateOpen.withLockedValue { $0 = true }
            }
            var all: [ProducerResult] = []
            for try await result in group { all.append(result) }
            return all.sorted { $0.index < $1.index }
        }
        let stormSeconds = stormRestart.map { restart -> Double in
            let last = results.compactMap(\.finishedAfter).max() ?? 0
            return last - Double((restart - start).components.seconds) - Double((restart - start).components.attoseconds) / 1e18
        }
        var report = try FaultReport.check(run: self, plans: plans, results: results, admin: admin)
        report.injected = injected
        report.stormSeconds = stormSeconds
        report.log = daemon.log
        daemon.kill()
        if let cluster { try? await cluster.stop(mode: .immediate) }
        print(report.summary)
        return report
    }
}

// MARK: - The producer

enum ProducerEvent: Sendable { case frame(ServerFrame), closed, tick }

final class EventCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ServerFrame
    let continuation: AsyncStream<ProducerEvent>.Continuation
    init(_ continuation: AsyncStream<ProducerEvent>.Continuation) { self.continuation = continuation }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { continuation.yield(.frame(unwrapInboundIn(data))) }
    func channelInactive(context: ChannelHandlerContext) {
        continuation.yield(.closed)
        continuation.finish()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// A client that follows the delivery rules (DESIGN §2) and records everything the server told it.
struct FaultProducer {
    let plan: ProducerPlan
    let port: Int
    let signals: FaultSignals
    let gateSeq: UInt64
    let start: ContinuousClock.Instant
    let deadline: ContinuousClock.Instant

    func elapsed() -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    func run() async -> ProducerResult {
        var result = ProducerResult(index: plan.index)
        var unacked = plan.batches
        var first = true
        while !unacked.isEmpty && ContinuousClock.now < deadline {
            if !first { try? await Task.sleep(for: .milliseconds(100 + plan.index % 50)) }
            first = false
            let (stream, continuation) = AsyncStream<ProducerEvent>.makeStream()
            let channel: any Channel
            do {
                channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.seconds(5))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandlers([
                                ByteToMessageHandler(
                                    MessageFrameDecoder<ServerFrame>(expectsPreface: false, limits: FrameLimitsHandle(.defaultNegotiated))),
                                EventCollector(continuation),
                            ])
                        }
                    }
                    .connect(host: "127.0.0.1", port: port).get()
            } catch {
                continue
            }
            result.connects += 1
            let ticker = channel.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
                continuation.yield(.tick)
            }
            defer {
                ticker.cancel()
                channel.close(promise: nil)
            }
            func send(_ frame: ClientFrame) async -> Bool {
                var buffer = channel.allocator.buffer(capacity: 256)
                do {
                    try FramePayload.encode(frame, into: &buffer, compressor: nil, compressAbove: 0)
                    try await channel.writeAndFlush(buffer)
                    return true
                } catch { return false }
            }
            guard (try? await channel.writeAndFlush(channel.allocator.buffer(bytes: sluicePreface))) != nil,
                await send(ClientFrame(.hello(RawClient.hello(producer: plan.producer))))
            else { continue }
            var welcome: Welcome?
            var ticks = 0
            var iterator = stream.makeAsyncIterator()
            handshake: while let event = await iterator.next() {
                switch event {
                case .frame(let frame):
                    if case .welcome(let w)? = frame.kind { welcome = w }
                    break handshake
                case .closed: break handshake
                case .tick:
                    ticks += 1
                    if ticks > 50 || ContinuousClock.now >= deadline { break handshake }
                }
            }
            guard let welcome else { continue }
            signals.handshakes.withLockedValue { $0 += 1 }
            var held = Int(welcome.initialCredit)
            for batch in unacked where batch.seq <= welcome.committedSeq { result.settled.append(batch.seq) }
            unacked.removeAll { $0.seq <= welcome.committedSeq }
            var sent = 0
            var requested = 0
            session: while !unacked.isEmpty {
                while sent < unacked.count, unacked[sent].seq <= gateSeq || signals.gateOpen.withLockedValue({ $0 }),
                    held >= plan.count
                {
                    held -= plan.count
                    if signals.faultActive.withLockedValue({ $0 }) { signals.sentDuringFault.withLockedValue { $0 += 1 } }
                    guard await send(ClientFrame(.batch(unacked[sent]))) else { break session }
                    sent += 1
                }
                if sent < unacked.count, held < plan.count, welcome.creditRequests, requested != plan.count {
                    requested = plan.count
                    guard await send(.creditRequest(UInt64(plan.count))) else { break session }
                }
                guard let event = await iterator.next() else { break session }
                switch event {
                case .tick:
                    if ContinuousClock.now >= deadline { break session }
                case .closed:
                    break session
                case .frame(let frame):
                    switch frame.kind {
                    case .credit(let c)?:
                        held += Int(c.readings)
                        requested = 0
                    case .ack(let ack)?:
                        if signals.faultActive.withLockedValue({ $0 }) { signals.answeredDuringFault.withLockedValue { $0 += 1 } }
                        result.acks[ack.seq] = ack
                        if let i = unacked.firstIndex(where: { $0.seq == ack.seq }) {
                            unacked.remove(at: i)
                            if i < sent { sent -= 1 }
                            signals.acked.withLockedValue { $0 += 1 }
                        }
                    case .error(let e)?:
                        if signals.faultActive.withLockedValue({ $0 }) { signals.answeredDuringFault.withLockedValue { $0 += 1 } }
                        result.errors.append("seq \(e.seq): \(e.code.name): \(e.message)")
                        // The rules leave one thing to do: reconnect and resend what is unacked.
                        if e.seq != 0 || e.closing { break session }
                    case .goAway?:
                        break session
                    case .ping(let p)?:
                        var pong = Pong()
                        pong.nonce = p.nonce
                        _ = await send(ClientFrame(.pong(pong)))
                    default: break
                    }
                }
            }
            result.held = held
        }
        if unacked.isEmpty { result.finishedAfter = elapsed() }
        result.unacked = unacked.map(\.seq)
        return result
    }
}

// MARK: - The checker

struct FaultReport {
    var fault: FaultKind
    var producers = 0
    var sent = 0
    var stored = 0
    var lost = 0
    var duplicated = 0
    var extra = 0
    var deadLetters = 0
    var deadLettersWithoutReason = 0
    var reasons: [String] = []
    var ackMismatches: [String] = []
    var batchErrors: [String] = []
    var unfinished: [String] = []
    var slowest = 0.0
    var bound = 0.0
    var injected: [String] = []
    var stormSeconds: Double?
    var log = ""

    static func check(run: FaultRun, plans: [ProducerPlan], results: [ProducerResult], admin: TestConnection) throws -> FaultReport {
        var r = FaultReport(fault: run.fault)
        r.producers = plans.count
        r.bound = run.bound
        r.sent = plans.count * run.batches * run.readingsPerBatch
        let base = run.base, n = run.readingsPerBatch
        let like = "fx-\(run.tag)-%"
        // Per (device, batch): rows, distinct readings, rows whose time is not one of that batch's readings.
        let offset = "((extract(epoch FROM time) * 1000000)::int8 - \(base))"
        var readings: [String: (rows: Int, distinct: Int, bad: Int)] = [:]
        for row in try admin.query("""
            SELECT device_id, \(offset) / 1000000, count(*), count(DISTINCT time),
                   count(*) FILTER (WHERE \(offset) % 1000000 >= \(n) OR \(offset) / 1000000 NOT BETWEEN 1 AND \(run.batches))
            FROM readings WHERE device_id LIKE '\(like)' GROUP BY 1, 2
            """)
        {
            readings["\(row[0]!)#\(row[1]!)"] = (Int(row[2]!)!, Int(row[3]!)!, Int(row[4]!)!)
        }
        var dead: [String: (rows: Int, distinct: Int, bad: Int, noReason: Int)] = [:]
        for row in try admin.query("""
            SELECT device_id, seq, count(*), count(DISTINCT time_us),
                   count(*) FILTER (WHERE (time_us - \(base)) / 1000000 <> seq OR (time_us - \(base)) % 1000000 >= \(n)),
                   count(*) FILTER (WHERE coalesce(reason, '') = '')
            FROM dead_letters WHERE device_id LIKE '\(like)' GROUP BY 1, 2
            """)
        {
            dead["\(row[0]!)#\(row[1]!)"] = (Int(row[2]!)!, Int(row[3]!)!, Int(row[4]!)!, Int(row[5]!)!)
        }
        for row in try admin.query("""
            SELECT reason_code, left(reason, 120), count(*) FROM dead_letters WHERE device_id LIKE '\(like)' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5
            """)
        {
            r.reasons.append("\(row[2]!)× code \(row[0]!) \"\(row[1] ?? "")\"")
        }
        let both = try admin.scalar("""
            SELECT count(*) FROM dead_letters d JOIN
              (SELECT device_id, (extract(epoch FROM time) * 1000000)::int8 AS time_us FROM readings WHERE device_id LIKE '\(like)') g
              ON g.device_id = d.device_id AND g.time_us = d.time_us WHERE d.device_id LIKE '\(like)'
            """)
        r.duplicated += both
        var known = Set<String>()
        for plan in plans {
            let result = results[plan.index]
            for seq in 1...run.batches {
                let key = "\(plan.device)#\(seq)"
                known.insert(key)
                let s = readings[key] ?? (0, 0, 0)
                let d = dead[key] ?? (0, 0, 0, 0)
                r.stored += s.rows
                r.deadLetters += d.rows
                r.deadLettersWithoutReason += d.noReason
                r.duplicated += (s.rows - s.distinct) + (d.rows - d.distinct)
                r.extra += s.bad + d.bad
                r.lost += max(0, n - (s.distinct - s.bad) - (d.distinct - d.bad))
                if let ack = result.acks[UInt64(seq)], Int(ack.accepted) != s.rows || Int(ack.rejected) != d.rows {
                    r.ackMismatches.append(
                        "\(plan.device) seq \(seq): ack accepted \(ack.accepted) rejected \(ack.rejected)\(ack.duplicate ? " (duplicate)" : ""), stored \(s.rows) + \(d.rows) dead letters")
                }
            }
            r.batchErrors += result.errors.map { "\(plan.device) \($0)" }
            if let after = result.finishedAfter {
                r.slowest = max(r.slowest, after)
                if after > run.bound { r.unfinished.append("\(plan.device) finished after \(after) s") }
            } else {
                r.unfinished.append("\(plan.device): seqs \(result.unacked) unacked, holding \(result.held) credit, \(result.connects) connections")
            }
        }
        for (key, s) in readings where !known.contains(key) { r.extra += s.rows }
        for (key, d) in dead where !known.contains(key) { r.extra += d.rows }
        return r
    }

    var clean: Bool {
        lost == 0 && duplicated == 0 && extra == 0 && deadLettersWithoutReason == 0 && ackMismatches.isEmpty
            && batchErrors.isEmpty && unfinished.isEmpty
    }

    var summary: String {
        var lines = ["chaos: \(fault.rawValue): faults injected \(injected.count): \(injected.joined(separator: "; "))"]
        lines.append(
            "chaos: \(fault.rawValue): \(producers) producers, readings sent \(sent), in readings \(stored), dead letters \(deadLetters) (\(deadLettersWithoutReason) without a reason); lost \(lost), duplicated \(duplicated), extra \(extra)")
        if !reasons.isEmpty { lines.append("chaos: \(fault.rawValue): dead-letter reasons: \(reasons.joined(separator: "; "))") }
        lines.append(
            "chaos: \(fault.rawValue): acks not matching what is stored \(ackMismatches.count), batches answered with an Error \(batchErrors.count), producers unfinished within \(Int(bound)) s \(unfinished.count); slowest producer \(String(format: "%.1f", slowest)) s")
        if let stormSeconds {
            lines.append(
                "chaos: storm: \(producers) producers, time from restart until the last was acked: \(unfinished.isEmpty ? String(format: "%.1f s", stormSeconds) : "never (\(producers - unfinished.count) of \(producers) acked)")")
        }
        for (name, list) in [("ack mismatch", ackMismatches), ("batch error", batchErrors), ("unfinished", unfinished)] {
            for item in list.prefix(5) { lines.append("chaos: \(fault.rawValue): \(name): \(item)") }
        }
        return lines.joined(separator: "\n")
    }

    func expectClean() {
        #expect(lost == 0, "every reading sent must be in readings or dead_letters")
        #expect(duplicated == 0 && extra == 0)
        #expect(deadLettersWithoutReason == 0)
        #expect(ackMismatches.count == 0, "acks must match what is stored: \(ackMismatches.prefix(5))")
        #expect(batchErrors.count == 0, "no batch may be failed for a refusal or a stall: \(batchErrors.prefix(5))")
        #expect(unfinished.count == 0, "every producer must finish within \(bound) s: \(unfinished.prefix(5))")
        if fault == .refuse { #expect(deadLetters > 0, "the refused values sent while the refusal was active must be dead-lettered") }
        if !clean { print("chaos: \(fault.rawValue): sluiced log tail:\n\(log.suffix(1500))") }
    }
}
