import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceProtocol

/// A producer's connection to sluiced: batches readings, respects credit, resends what was not acknowledged
/// after a reconnect, and reports acks, rejections and errors.
///
/// ```swift
/// let client = try await SluiceClient(configuration: .init(endpoints: [Endpoint(host: "127.0.0.1", port: 7878)]))
/// try await client.send([Reading(deviceID: "pump-1", metric: "temp_c", timeMicros: now, value: 21.37)])
/// try await client.close()   // flushes: returns once every reading is durable
/// ```
///
/// `send` returns once the readings are queued in the client; `flush` once everything queued is acknowledged
/// (durable in PostgreSQL) or rejected. Memory is bounded: when queued plus unacknowledged batches reach
/// `bufferCapacityBytes`, `send` waits for acks. The client reconnects by itself, forever, until `close`; only
/// errors retrying cannot fix (a refused token) make `send` and `flush` throw.
public actor SluiceClient {
    /// The identity the server deduplicates this producer's batches by.
    public nonisolated let producer: ProducerIdentity
    /// What happened: sessions, acks, rejections, errors. Buffers the newest 10,000 events if nobody reads.
    public nonisolated let events: AsyncStream<ClientEvent>

    /// What opening the spool found (nil without a spool): batches an earlier run left, problems recovered from.
    public nonisolated let spoolRecovery: SpoolRecovery?

    let configuration: SluiceClientConfiguration
    let logger: Logger
    private let eventSink: AsyncStream<ClientEvent>.Continuation
    let stateFilePath: String?
    let compressor: ZstdCompressor?
    /// The spool (nil without one) and the client's bookkeeping of it (SluiceClient+Spool.swift).
    let spool: Spool?
    var spoolWindow: SpoolWindow
    /// Spooled batches with seqs below this were left by an earlier run.
    let spoolRecoveredBelow: UInt64
    /// The TLS context every connection of this client uses; nil = plain TCP.
    private let tlsSetup: ClientTLSSetup?

    struct Unacked: Sendable {
        var frame: ByteBuffer
        var enqueuedAt: ContinuousClock.Instant
        /// Nil until first transmitted (a spooled batch waits in the buffer before its first send).
        var firstSentAt: ContinuousClock.Instant?
        /// Left in the spool by an earlier run: every transmission of it is a resend.
        var recovered = false
    }

    private struct Session {
        var number: UInt64
        var connection: ClientConnection
        var endpoint: Endpoint
        var id: UInt64 = 0
        var open = false
        var maxBatchReadings = 0
        /// The server's `max_batch_readings` (0 = none stated).
        var serverMaxBatchReadings = 0
        var maxFrameBytes = 0
        var draining = false
        /// The server reads `CreditRequest` (`Welcome.credit_requests`).
        var creditRequests = false
        /// The credit asked for on this session and not yet used (nil = none asked since the last batch sent).
        var requested: UInt64?
    }

    var seqs: SeqAllocator
    private var reserving = false
    private var pending = PendingReadings<ContinuousClock.Instant>()
    var buffer: RetransmitBuffer<Unacked>
    private var credit = CreditWindow()
    private var session: Session?
    private var sessionCounter: UInt64 = 0
    private var sessionsOpened = 0
    private var goAwayHint: Duration = .zero
    var stats = ClientStats()
    private var creditWaitStarted: ContinuousClock.Instant?
    var spaceWaiters: [CheckedContinuation<Void, any Error>] = []
    private var flushWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    private var flushTimers: [UInt64: Task<Void, Never>] = [:]
    private var waiterCounter: UInt64 = 0
    var failure: ClientError?
    var closed = false
    private var driver: Task<Void, Never>?

    /// Loads (or creates) the producer state if asked, then starts connecting in the background.
    public init(configuration: SluiceClientConfiguration, logger: Logger = Logger(label: "sluice.client")) async throws {
        guard !configuration.endpoints.isEmpty else {
            throw ClientError.invalidEndpoint("", "no server address given")
        }
        self.configuration = configuration
        self.logger = logger
        (events, eventSink) = AsyncStream.makeStream(of: ClientEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        compressor = configuration.compression ? ZstdCompressor() : nil
        buffer = RetransmitBuffer(capacityBytes: max(configuration.bufferCapacityBytes, 1))
        if let tls = configuration.tls {
            // Reading the CA file (or the system's CA bundle) is blocking I/O: not on the cooperative pool.
            tlsSetup = try await NIOThreadPool.singleton.runIfActive { try ClientTLSSetup.make(tls) }
        } else {
            tlsSetup = nil
        }
        if let spoolConfiguration = configuration.spool {
            // The spool keeps the identity; a state file given as well only seeds a new spool with its own.
            let seedPath: String?
            if case .stateFile(let path) = configuration.producer { seedPath = path } else { seedPath = nil }
            let opened = try await NIOThreadPool.singleton.runIfActive {
                let seed = seedPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }.flatMap { try? ProducerState.decode($0) }
                return try Spool.open(spoolConfiguration, seed: seed)
            }
            producer = opened.producer.producer
            seqs = SeqAllocator(next: opened.producer.nextSeq, persisted: true)
            stateFilePath = opened.spool.directory + "/producer.json"
            spool = opened.spool
            spoolRecovery = opened.recovery
            spoolWindow = SpoolWindow(recovered: opened.entries)
            spoolRecoveredBelow = opened.producer.nextSeq
            stats.spooled = true
            stats.spoolInputPosition = opened.recovery.inputPosition
        } else {
            spool = nil
            spoolRecovery = nil
            spoolWindow = SpoolWindow()
            spoolRecoveredBelow = 0
            switch configuration.producer {
            case .ephemeral:
                producer = .random()
                seqs = SeqAllocator(next: 1, persisted: false)
                stateFilePath = nil
            case .fixed(let id, let next):
                producer = id
                seqs = SeqAllocator(next: next, persisted: false)
                stateFilePath = nil
            case .stateFile(let path):
                let state = try await NIOThreadPool.singleton.runIfActive { try ProducerStateFile.loadOrCreate(path: path) }
                producer = state.producer
                seqs = SeqAllocator(next: state.nextSeq, persisted: true)
                stateFilePath = path
            }
        }
        driver = Task {
            self.spoolStarted()
            await self.runConnections()
        }
    }

    // MARK: - Public API

    /// Queues readings; they are batched (grouped by device and metric) and sent as credit allows.
    ///
    /// Waits while the client's buffer is full. Throws only if the client failed for good or was closed.
    /// - Parameter enqueuedAt: the instant latency is measured from (default: now), e.g. a scheduled send time.
    /// - Parameter inputPosition: with a spool, the caller's input position after these readings (for
    ///   `sluice send`, input lines taken), kept with them so a restarted producer knows where its input resumes
    ///   (`spoolRecovery.inputPosition`). With a spool, `send` returns once the readings are in it.
    public func send(
        _ readings: [Reading], enqueuedAt: ContinuousClock.Instant? = nil, inputPosition: UInt64? = nil
    ) async throws {
        try await send(SeriesChunk.group(readings), enqueuedAt: enqueuedAt, inputPosition: inputPosition)
    }

    /// Queues series built with the wire module's `SeriesBuilder`.
    public func send(_ series: [SeriesBuilder], enqueuedAt: ContinuousClock.Instant? = nil) async throws {
        try await send(series.map(SeriesChunk.init), enqueuedAt: enqueuedAt)
    }

    /// Queues series chunks (the client's own columnar form).
    public func send(
        _ chunks: [SeriesChunk], enqueuedAt: ContinuousClock.Instant? = nil, inputPosition: UInt64? = nil
    ) async throws {
        if spool != nil {
            try await spoolSend(chunks, enqueuedAt: enqueuedAt ?? .now, inputPosition: inputPosition)
            return
        }
        try checkUsable()
        while isFull {
            try await withCheckedThrowingContinuation { spaceWaiters.append($0) }
            try checkUsable()
        }
        let stamp = enqueuedAt ?? .now
        for chunk in chunks {
            pending.append(chunk, stamp: stamp)
            stats.readingsQueued += chunk.count
        }
        pump()
    }

    /// Returns once everything queued so far is acknowledged (or rejected).
    ///
    /// - Parameter timeout: give up after this long with `ClientError.flushTimedOut` (nil: wait for ever,
    ///   through any number of reconnects).
    public func flush(timeout: Duration? = nil) async throws {
        if let failure { throw failure }
        if isDrained { return }
        if closed { throw ClientError.closed }
        waiterCounter += 1
        let id = waiterCounter
        if let timeout {
            flushTimers[id] = Task { [weak self] in
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return }
                await self?.expireFlush(id)
            }
        }
        try await withCheckedThrowingContinuation { flushWaiters[id] = $0 }
    }

    /// Flushes (under `timeout`), then closes the connection and stops reconnecting. Saves the producer
    /// state file's seq so a restart continues right after the last seq used.
    public func close(timeout: Duration? = nil) async throws {
        guard !closed else { return }
        var flushError: (any Error)?
        if failure == nil {
            do { try await flush(timeout: timeout) } catch { flushError = error }
        }
        closed = true
        await spoolClosing()
        driver?.cancel()
        session?.connection.close()
        await driver?.value
        failWaiters(with: failure ?? .closed)
        if let path = stateFilePath, failure == nil {
            let state = ProducerState(producer: producer, nextSeq: seqs.next)
            _ = try? await NIOThreadPool.singleton.runIfActive { try ProducerStateFile.write(state, to: path) }
        }
        eventSink.finish()
        if let failure { throw failure }
        if let flushError { throw flushError }
    }

    /// Counters for progress displays.
    public var statistics: ClientStats {
        var s = stats
        if let started = creditWaitStarted { s.creditWaitSeconds += (ContinuousClock.now - started).seconds }
        s.waitingForCredit = creditWaitStarted != nil
        s.creditHeld = credit.held
        s.readingsOutstanding = pending.count + buffer.readings + spoolWindow.backlogReadings
        s.unackedBatches = buffer.count + spoolWindow.backlogCount
        if let spool {
            s.spoolBatches = spoolWindow.liveBatches
            s.spoolReadings = spoolWindow.liveReadings
            s.spoolBytes = spool.bytesOnDisk.load(ordering: .relaxed)
            s.spoolFull = spoolWindow.waitingForRoom
        }
        s.bufferedBytes = buffer.bytes + pending.estimatedBytes
        return s
    }

    /// The next seq this producer will use.
    public var nextSeq: UInt64 { seqs.next }

    // MARK: - Buffer and waiters

    /// With a spool, `send` waits on the spool's size, not the in-memory window (which only bounds memory).
    var isFull: Bool {
        if let spool { return spool.bytesOnDisk.load(ordering: .relaxed) >= spool.configuration.maxBytes }
        return buffer.bytes + pending.estimatedBytes >= buffer.capacityBytes
    }
    /// With a spool, drained also means acknowledged batches have left it, so a flushed client's spool is empty.
    private var isDrained: Bool {
        pending.isEmpty && buffer.isEmpty && spoolWindow.backlogIsEmpty && !spoolWindow.loading && !spoolWindow.releasing
            && spoolWindow.toRelease.isEmpty
    }

    func checkUsable() throws {
        if let failure { throw failure }
        if closed { throw ClientError.closed }
    }

    func wakeWaiters() {
        if !isFull && !spaceWaiters.isEmpty {
            let waiters = spaceWaiters
            spaceWaiters.removeAll()
            for w in waiters { w.resume() }
        }
        if isDrained && !flushWaiters.isEmpty {
            let waiters = flushWaiters
            flushWaiters.removeAll()
            for (id, w) in waiters {
                flushTimers.removeValue(forKey: id)?.cancel()
                w.resume()
            }
        }
    }

    private func expireFlush(_ id: UInt64) {
        flushTimers[id] = nil
        guard let waiter = flushWaiters.removeValue(forKey: id) else { return }
        waiter.resume(
            throwing: ClientError.flushTimedOut(
                unackedReadings: pending.count + buffer.readings + spoolWindow.backlogReadings,
                unackedBatches: buffer.count + spoolWindow.backlogCount + (pending.isEmpty ? 0 : 1),
                lastProblem: stats.lastProblem))
    }

    private func failWaiters(with error: ClientError) {
        let space = spaceWaiters
        spaceWaiters.removeAll()
        for w in space { w.resume(throwing: error) }
        let flushes = flushWaiters
        flushWaiters.removeAll()
        for (id, w) in flushes {
            flushTimers.removeValue(forKey: id)?.cancel()
            w.resume(throwing: error)
        }
    }

    /// An error retrying cannot fix: stop, and make every caller see it.
    func fail(_ error: ClientError) {
        guard failure == nil else { return }
        logger.error("sluice client stopped: \(error)")
        failure = error
        stats.lastProblem = error.description
        eventSink.yield(.error(error))
        session?.connection.close()
        failWaiters(with: error)
    }

    // MARK: - Connections

    private func runConnections() async {
        var backoff = Backoff(initial: configuration.reconnectInitialDelay, maximum: configuration.reconnectMaxDelay)
        var endpointIndex = 0
        while !Task.isCancelled && !closed && failure == nil {
            let endpoint = configuration.endpoints[endpointIndex % configuration.endpoints.count]
            var problem: String
            var opened = false
            do {
                let connection = try await ClientConnection.connect(
                    to: endpoint, timeout: configuration.connectTimeout, group: MultiThreadedEventLoopGroup.singleton,
                    tls: tlsSetup)
                (opened, problem) = await runSession(connection, endpoint: endpoint)
            } catch {
                problem = ClientConnection.describe(connectError: error, timeout: configuration.connectTimeout)
            }
            if closed || failure != nil || Task.isCancelled { break }
            if opened { backoff.reset() } else { endpointIndex += 1 }
            let delay = max(backoff.next(), goAwayHint)
            goAwayHint = .zero
            stats.lastProblem = "\(endpoint): \(problem)"
            logger.debug("sluice: \(endpoint): \(problem); reconnecting in \(delay)")
            eventSink.yield(.disconnected(endpoint: endpoint, reason: problem, retryIn: delay))
            try? await Task.sleep(for: delay)
        }
    }

    /// Runs one connection from `Hello` to its end. Returns whether the session opened, and why it ended.
    private func runSession(_ connection: ClientConnection, endpoint: Endpoint) async -> (Bool, String) {
        sessionCounter += 1
        let number = sessionCounter
        session = Session(number: number, connection: connection, endpoint: endpoint)
        var hello = Hello()
        hello.protocolVersion = sluiceProtocolVersion
        hello.producerID = Data(producer.bytes)
        hello.token = configuration.token
        hello.clientName = configuration.clientName
        hello.clientVersion = configuration.clientVersion
        hello.compressions = [.none, .zstd]
        hello.creditReturns = true
        connection.sendHello(hello)
        let handshakeTimer = Task { [weak self, timeout = configuration.connectTimeout] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            await self?.handshakeExpired(number)
        }
        var reason = "the server closed the connection"
        var tlsFailure: String?
        for await event in connection.events {
            switch event {
            case .frame(let frame):
                handle(frame, session: number)
            case .closed(let why):
                if let why { reason = why }
            case .tlsFailed(let why):
                tlsFailure = why
            }
        }
        handshakeTimer.cancel()
        if let tlsFailure, session?.number == number {
            // An untrusted certificate or a server without TLS: reconnecting cannot fix it, like a refused token.
            fail(.tls(endpoint: "\(endpoint)", reason: tlsFailure))
        }
        let opened = session?.open ?? false
        if let pendingProblem = session.flatMap({ _ in stats.lastProblem }), !opened, reason == "the server closed the connection" {
            reason = pendingProblem
        }
        endSession()
        return (opened, reason)
    }

    private func handshakeExpired(_ number: UInt64) {
        guard let s = session, s.number == number, !s.open else { return }
        stats.lastProblem = "no Welcome within \(configuration.connectTimeout) of Hello"
        s.connection.close()
    }

    private func endSession() {
        endCreditWait()
        session = nil
        stats.connected = false
        credit.reset(initial: 0)
    }

    private func handle(_ frame: ServerFrame, session number: UInt64) {
        guard session?.number == number else { return }
        switch frame.kind {
        case .welcome(let welcome): opened(welcome)
        case .ack(let ack): acked(ack)
        case .credit(let grant):
            credit.grant(grant.readings)
            pump()
        case .creditRecall(let recall):
            // Idle credit others wait for: give back what is held now, at once (the server closes a session
            // that does not answer). The next batch that needs credit asks for it again.
            let given = credit.giveBack(upTo: recall.readings)
            session?.requested = nil
            stats.creditReturned += Int(clamping: given)
            session?.connection.returnCredit(given)
            pump()
        case .error(let error): serverError(error)
        case .goAway(let goAway):
            session?.draining = true
            endCreditWait()
            goAwayHint = .milliseconds(Int64(goAway.reconnectAfterMs))
            stats.lastProblem = "server sent GoAway: \(goAway.reason)"
        case .ping, .pong, nil: break
        }
    }

    private func opened(_ welcome: Welcome) {
        guard var s = session, !s.open else { return }
        guard welcome.protocolVersion == sluiceProtocolVersion else {
            fail(.unsupported("server speaks protocol v\(welcome.protocolVersion)"))
            return
        }
        s.open = true
        s.id = welcome.sessionID
        let serverMax = welcome.maxBatchReadings == 0 ? Int.max : Int(welcome.maxBatchReadings)
        s.maxBatchReadings = max(1, min(configuration.maxBatchReadings, serverMax))
        s.serverMaxBatchReadings = Int(welcome.maxBatchReadings)
        s.creditRequests = welcome.creditRequests
        s.requested = nil
        s.maxFrameBytes = welcome.maxFrameBytes == 0 ? FrameLimits.defaultNegotiated.maxFrameBytes : Int(welcome.maxFrameBytes)
        session = s
        credit.reset(initial: welcome.initialCredit)
        sessionsOpened += 1
        stats.reconnects = sessionsOpened - 1
        stats.connected = true
        let heartbeat = welcome.heartbeatIntervalMs == 0
            ? configuration.defaultHeartbeat : .milliseconds(Int64(welcome.heartbeatIntervalMs))
        s.connection.startHeartbeat(interval: heartbeat)
        // Batches at or below committed_seq were committed on an earlier session and their acks were lost.
        // They are resent anyway: the server acks each as a duplicate with the counts of its original outcome
        // (readings it dead-lettered included), which committed_seq alone cannot tell. Counting them all as
        // written here would claim more than is stored.
        seqs.skip(through: welcome.committedSeq)
        buffer.sessionRestarted()
        loadFromSpool()
        logger.debug("sluice: session \(welcome.sessionID) open on \(s.endpoint), credit \(welcome.initialCredit)")
        eventSink.yield(.connected(endpoint: s.endpoint, sessionID: welcome.sessionID, committedSeq: welcome.committedSeq))
        wakeWaiters()
        pump()
    }

    private func acked(_ ack: Ack) {
        guard let entry = buffer.remove(seq: ack.seq) else { return }
        spoolAcknowledged(entry)
        var rejections: [ReadingRejection] = []
        if !ack.reasons.isEmpty {
            let readings = BatchEncoding.readings(ofFrame: entry.payload.frame)
            rejections = ack.reasons.map { r in
                ReadingRejection(
                    index: Int(r.index), code: rejectCodeName(r.code), reason: r.message,
                    reading: Int(r.index) < readings.count ? readings[Int(r.index)] : nil)
            }
        }
        let now = ContinuousClock.now
        recordAck(
            BatchAck(
                seq: ack.seq, readings: entry.readings, accepted: Int(ack.accepted), rejected: Int(ack.rejected),
                duplicate: ack.duplicate, rejections: rejections, latency: entry.payload.firstSentAt.map { now - $0 },
                sinceEnqueued: now - entry.payload.enqueuedAt))
        wakeWaiters()
    }

    private func recordAck(_ ack: BatchAck) {
        stats.batchesAcked += 1
        stats.readingsAcked += ack.readings
        stats.readingsAccepted += ack.accepted
        stats.readingsRejected += ack.rejected
        if ack.duplicate { stats.batchesDuplicate += 1 }
        eventSink.yield(.acked(ack))
    }

    private func serverError(_ error: ErrorFrame) {
        let message = error.message
        switch error.code {
        case .unauthenticated:
            fail(.unauthenticated(message))
            return
        case .unimplemented:
            fail(.unsupported(message))
            return
        case .permissionDenied where error.seq == 0:
            fail(.permissionDenied(message))
            return
        case .invalidArgument, .permissionDenied, .frameTooLarge:
            // The batch itself is wrong: sending it again cannot help, so it leaves the buffer.
            if error.seq != 0, let entry = buffer.remove(seq: error.seq) {
                spoolAcknowledged(entry)
                stats.batchesRejected += 1
                stats.readingsInRejectedBatches += entry.readings
                let rejection = BatchRejection(seq: error.seq, readings: entry.readings, code: error.code.name, message: message)
                logger.warning("sluice: batch \(error.seq) rejected: \(error.code.name): \(message)")
                eventSink.yield(.rejected(rejection))
                wakeWaiters()
                return
            }
        default:
            break
        }
        stats.lastProblem = "\(error.code.name): \(message)"
        logger.info("sluice: server error \(error.code.name): \(message)")
        eventSink.yield(.error(.server(code: error.code.name, message: message, seq: error.seq)))
    }

    // MARK: - Sending

    /// Sends whatever the credit allows: resends first (in seq order), then new batches cut from the queue.
    func pump() {
        while let s = session, s.open, !s.draining, failure == nil, !closed {
            let decision = TransmitPlanner.decide(
                credit: credit.held, nextResendReadings: buffer.nextToSend?.readings, pendingReadings: pending.count,
                maxBatchReadings: s.maxBatchReadings)
            switch decision {
            case .idle:
                endCreditWait()
                return
            case .waitForCredit:
                beginCreditWait()
                askForCredit(on: s)
                return
            case .resend:
                endCreditWait()
                session?.requested = nil
                let entry = buffer.nextToSend!
                credit.consume(entry.readings)
                let now = ContinuousClock.now
                buffer.markNextSent { if $0.firstSentAt == nil { $0.firstSentAt = now } }
                if entry.payload.firstSentAt == nil && !entry.payload.recovered {
                    // A spooled batch's first transmission.
                    stats.readingsSent += entry.readings
                    stats.batchesSent += 1
                } else {
                    stats.batchesResent += 1
                }
                transmit(entry.payload.frame, readings: entry.readings, on: s)
            case .cut(let n):
                endCreditWait()
                session?.requested = nil
                if seqs.available < 64 { reserveSeqs() }
                guard seqs.canAllocate else { return }  // pump runs again once the state file is written
                cut(n, on: s)
            }
        }
    }

    /// Waiting for credit: tells a server that reads `CreditRequest` what the next batch needs (the oldest resend
    /// as it is, or a new batch of what is pending, up to the batch size), once per need.
    private func askForCredit(on s: Session) {
        guard s.creditRequests else { return }
        let need = CreditPlanner.need(
            nextResendReadings: buffer.nextToSend?.readings, pendingReadings: pending.count,
            maxBatchReadings: s.maxBatchReadings, serverMaxBatchReadings: s.serverMaxBatchReadings)
        guard let need, need > credit.held, s.requested != need else { return }
        session?.requested = need
        stats.creditRequests += 1
        s.connection.requestCredit(need)
    }

    private func cut(_ n: Int, on s: Session) {
        let (chunks, oldest) = pending.take(n)
        let enqueuedAt = oldest ?? .now
        var parts = [chunks]
        var fitted: [(UInt64, ByteBuffer, Int)] = []
        while let part = parts.first {
            parts.removeFirst()
            let readings = part.reduce(0) { $0 + $1.count }
            guard seqs.canAllocate else {
                // Out of reserved seqs mid-split (rare): queue the rest again.
                for chunk in part { pending.append(chunk, stamp: enqueuedAt) }
                continue
            }
            let seq = seqs.next
            let frame: ByteBuffer
            do {
                frame = try BatchEncoding.frame(BatchEncoding.batch(seq: seq, chunks: part), compressor: compressor)
            } catch {
                fail(.invalidInput("cannot encode batch \(seq): \(error)"))
                return
            }
            if frame.readableBytes - RawFrame.prefixBytes > s.maxFrameBytes {
                guard readings > 1 else {
                    fail(.invalidInput("one reading encodes to \(frame.readableBytes) bytes, above the server's frame limit of \(s.maxFrameBytes)"))
                    return
                }
                let (left, right) = halve(part, readings: readings)
                parts.insert(contentsOf: [left, right], at: 0)
                continue
            }
            _ = seqs.allocate()
            fitted.append((seq, frame, readings))
        }
        let now = ContinuousClock.now
        for (seq, frame, readings) in fitted {
            buffer.append(
                seq: seq, readings: readings, bytes: frame.readableBytes,
                payload: Unacked(frame: frame, enqueuedAt: enqueuedAt, firstSentAt: now))
            credit.consume(readings)
            buffer.markNextSent()
            stats.readingsSent += readings
            stats.batchesSent += 1
            transmit(frame, readings: readings, on: s)
        }
    }

    func halve(_ chunks: [SeriesChunk], readings: Int) -> ([SeriesChunk], [SeriesChunk]) {
        var left: [SeriesChunk] = []
        var right: [SeriesChunk] = []
        var need = readings / 2
        for chunk in chunks {
            if need == 0 {
                right.append(chunk)
            } else if chunk.count <= need {
                left.append(chunk)
                need -= chunk.count
            } else {
                left.append(chunk.slice(0..<need))
                right.append(chunk.slice(need..<chunk.count))
                need = 0
            }
        }
        return (left, right)
    }

    private func transmit(_ frame: ByteBuffer, readings: Int, on s: Session) {
        stats.batchWireBytes += frame.readableBytes
        stats.batchWireReadings += readings
        s.connection.write(frame)
    }

    private func beginCreditWait() {
        guard creditWaitStarted == nil else { return }
        creditWaitStarted = .now
        stats.creditWaits += 1
    }

    private func endCreditWait() {
        guard let started = creditWaitStarted else { return }
        stats.creditWaitSeconds += (ContinuousClock.now - started).seconds
        creditWaitStarted = nil
    }

    private func reserveSeqs() {
        guard let path = stateFilePath, !reserving else { return }
        reserving = true
        let state = ProducerState(producer: producer, nextSeq: seqs.nextReservation)
        Task {
            do {
                try await NIOThreadPool.singleton.runIfActive { try ProducerStateFile.write(state, to: path) }
                self.reserved(upTo: state.nextSeq)
            } catch let error as ClientError {
                self.fail(error)
            } catch {
                self.fail(.stateFile(path: path, reason: "\(error)"))
            }
        }
    }

    private func reserved(upTo: UInt64) {
        reserving = false
        seqs.reserved(upTo: upTo)
        pump()
    }
}

func rejectCodeName(_ code: RejectCode) -> String {
    switch code {
    case .unspecified: "UNSPECIFIED"
    case .valueNotFinite: "VALUE_NOT_FINITE"
    case .tooOld: "TOO_OLD"
    case .inFuture: "IN_FUTURE"
    case .badDeviceID: "BAD_DEVICE_ID"
    case .badMetric: "BAD_METRIC"
    case .databaseRefused: "DATABASE_REFUSED"
    case .UNRECOGNIZED(let raw): "REJECT_\(raw)"
    }
}
