import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore
import SluiceProtocol
import SluiceStore

/// Everything a session needs from the server, passed to each connection's handler.
struct ServerContext: Sendable {
    let coordinator: IngestCoordinator
    let pipeline: IngestPipeline
    let pool: WriterPool
    let configuration: SluiceServer.Configuration
    let logger: Logger
    /// Producer ownership in PostgreSQL; nil = not checked (tests without a database).
    var owners: ProducerOwners? = nil
    /// Encoded bytes every connection has waiting for the pipeline, summed.
    let pendingDecode = PendingDecodeBudget()
}

/// Bytes of undecoded frames in the pipeline, over all connections (see `maxPendingDecodeBytes`), and the
/// connections that stopped reading because the total was over it: they are woken, in the order they
/// paused, once it falls below half, so none is left waiting behind busier ones.
final class PendingDecodeBudget: Sendable {
    private struct State {
        var bytes = 0
        var waiting: [SessionHandle] = []
    }

    private let state = NIOLockedValueBox(State())

    func add(_ n: Int) {
        state.withLockedValue { $0.bytes += n }
    }

    /// Gives back `n` bytes; wakes every waiting connection when the total is below `limit / 2`.
    func release(_ n: Int, limit: Int) {
        let woken = state.withLockedValue { s -> [SessionHandle] in
            s.bytes -= n
            guard s.bytes < limit / 2 || s.bytes == 0, !s.waiting.isEmpty else { return [] }
            defer { s.waiting.removeAll() }
            return s.waiting
        }
        for handle in woken { handle.decodeBudgetFreed() }
    }

    /// `handle` paused because the total is over the limit.
    func wait(_ handle: SessionHandle) {
        state.withLockedValue { s in
            if !s.waiting.contains(where: { $0.id == handle.id }) { s.waiting.append(handle) }
        }
    }

    var total: Int { state.withLockedValue { $0.bytes } }
}

extension SessionHandle {
    /// The server-wide pending-decode budget has room again: resume reading if this connection may.
    func decodeBudgetFreed() {
        eventLoop.execute { handler.value.updateReading() }
    }
}

/// One connection's session: feeds `SessionStateMachine` with frames, pipeline results, commits, timer ticks
/// and shutdown, and performs the actions it returns. All of its state lives on the channel's event loop;
/// other threads reach it through `SessionHandle`, which hops there.
final class SessionHandler: ChannelInboundHandler {
    typealias InboundIn = RawFrame
    typealias OutboundOut = ServerFrame

    private let server: ServerContext
    private let limits: FrameLimitsHandle
    private let progress: ReadProgress
    private let isLoopbackPeer: Bool
    private let peerAddress: String
    private var machine: SessionStateMachine
    private var logger: Logger

    private var context: ChannelHandlerContext?
    private var handle: SessionHandle?
    private var connectionID: UInt64 = 0
    private var producer: ProducerID?
    private var devicePrefix = ""
    private var tokenID: String?
    /// Encoded bytes of this connection's frames in the pipeline, in all and by ticket.
    private var pendingDecodeBytes = 0
    private var pendingByTicket: [UInt64: Int] = [:]
    private var committedSeq: UInt64 = 0
    private var initialCredit = 0
    /// The client answers `CreditRecall` (`Hello.credit_returns`).
    private var returnsCredit = false

    /// Validated batches waiting for their turn, by ticket.
    private var prepared: [UInt64: PreparedBatch] = [:]
    /// Acks to send when the batch of that seq commits.
    private var pendingAcks: [UInt64: Ack] = [:]
    /// When each batch frame arrived, by ticket until it is submitted and then by seq until its ack leaves:
    /// the server's side of ack latency (`sluice_ack_latency_seconds`), validation and queueing included.
    private var arrivedByTicket: [UInt64: ContinuousClock.Instant] = [:]
    private var arrivedBySeq: [UInt64: ContinuousClock.Instant] = [:]
    private var sawPreface = false
    private var closing = false
    private var readingPaused = false
    private var flushScheduled = false
    private var lastWrite: EventLoopFuture<Void>?
    private var ticker: RepeatedTask?
    private var controlDecompressor: ZstdDecompressor?

    init(server: ServerContext, limits: FrameLimitsHandle, progress: ReadProgress, isLoopbackPeer: Bool, peer: String) {
        self.server = server
        self.limits = limits
        self.progress = progress
        self.isLoopbackPeer = isLoopbackPeer
        self.peerAddress = String(peer[..<(peer.lastIndex(of: ":") ?? peer.endIndex)])
        self.machine = SessionStateMachine(now: NIODeadline.now().uptimeNanoseconds, timeouts: server.configuration.timeouts)
        self.logger = server.logger
        self.logger[metadataKey: "peer"] = "\(peer)"
    }

    // MARK: - Channel events

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let admission = server.coordinator.connectionAccepted(address: peerAddress) { id in
            SessionHandle(id: id, eventLoop: loop, handler: bound)
        }
        switch admission {
        case .refused(let reason):
            // The coordinator logs refusals at most every 10 s (a flood of them must not flood the log).
            logger.debug("connection refused", metadata: ["reason": "\(reason)"])
            perform(machine.wireError(WireError(.unavailable, reason)))
        case .admitted(let id):
            connectionID = id
            handle = SessionHandle(id: id, eventLoop: loop, handler: bound)
            logger[metadataKey: "session"] = "\(id)"
            logger.debug("connection accepted")
            let t = server.configuration.timeouts
            let period = max(10_000_000, min(1_000_000_000, min(t.heartbeatInterval, t.frameStall, t.handshake) / 4))
            ticker = loop.scheduleRepeatedTask(
                initialDelay: .nanoseconds(Int64(period)), delay: .nanoseconds(Int64(period))
            ) { _ in bound.value.tick() }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        machine.channelClosed()
        ticker?.cancel()
        ticker = nil
        prepared.removeAll()
        pendingAcks.removeAll()
        arrivedByTicket.removeAll()
        arrivedBySeq.removeAll()
        if pendingDecodeBytes > 0 {
            // Frames still in the pipeline are dropped with the connection: give their bytes back now.
            server.pendingDecode.release(pendingDecodeBytes, limit: server.configuration.maxPendingDecodeBytes)
            pendingDecodeBytes = 0
            pendingByTicket.removeAll()
        }
        if handle != nil {
            server.coordinator.connectionClosed(connectionID, producer: producer)
            logger.debug("connection closed")
        }
        self.context = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        progress.bytesConsumed += RawFrame.prefixBytes + frame.payload.readableBytes + (sawPreface ? 0 : sluicePreface.count)
        if !sawPreface {
            sawPreface = true
            perform(machine.prefaceReceived())
        }
        machine.frameReceived(now: NIODeadline.now().uptimeNanoseconds)
        switch machine.state {
        case .streaming, .draining:
            // Batches go to the pipeline still encoded: zstd and protobuf decoding of big payloads must not run
            // on the event loop. An uncompressed payload starting with field 2's tag (0x12) is a Batch.
            // Anything bigger than a control frame goes there too, whatever its first byte.
            let firstByte = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt8.self)
            if frame.isCompressed || firstByte == 0x12 || frame.payload.readableBytes > 1024 {
                dispatch(.raw(frame))
            } else {
                control(frame)
            }
        case .awaitingHello:
            control(frame)
        case .awaitingPreface, .closed:
            return
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let wire = error as? WireError {
            perform(machine.wireError(wire))
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
            machine.channelClosed()
            context.close(promise: nil)
        }
    }

    // MARK: - Frames decoded on the loop (small: Hello, Ping, Pong)

    private func control(_ frame: RawFrame) {
        let message: ClientFrame
        do {
            if frame.isCompressed && controlDecompressor == nil { controlDecompressor = ZstdDecompressor() }
            message = try FramePayload.decodeFrame(
                ClientFrame.self, from: frame, decompressor: controlDecompressor,
                maxDecompressedBytes: limits.limits.maxDecompressedBytes)
        } catch {
            perform(machine.wireError(error))
            return
        }
        switch message.kind {
        case .hello(let hello): perform(machine.helloReceived(hello))
        case .batch(let batch): dispatch(.decoded(batch))
        case .ping(let ping): perform(machine.pingReceived(nonce: ping.nonce))
        case .creditRequest(let request): performAll(machine.creditRequestReceived(readings: request.readings))
        case .creditReturn(let giveBack): performAll(machine.creditReturnReceived(readings: giveBack.readings))
        case .pong, nil: break
        }
    }

    private func dispatch(_ input: PipelineJob.Input) {
        guard let action = machine.batchFrameReceived() else { return }
        guard case .dispatch(let ticket) = action, let producer, let handle else {
            perform(action)
            return
        }
        arrivedByTicket[ticket] = .now
        if case .raw(let frame) = input {
            let bytes = frame.payload.readableBytes
            pendingByTicket[ticket] = bytes
            pendingDecodeBytes += bytes
            server.pendingDecode.add(bytes)
        }
        server.pipeline.submit(
            PipelineJob(
                input: input, ticket: ticket, producer: producer, devicePrefix: devicePrefix,
                maxDecompressedBytes: limits.limits.maxDecompressedBytes, session: handle))
        updateReading()
    }

    /// Backpressure into TCP for a client that sends faster than the pipeline decodes: the socket is not read
    /// while this connection has too many frames or bytes waiting, or every connection together has too many
    /// bytes waiting; reading resumes below half of each (checked as frames finish and on every tick).
    func updateReading() {
        guard context != nil, !machine.isClosed else { return }
        let c = server.configuration
        let total = server.pendingDecode.total
        if !readingPaused {
            let overTotal = total >= c.maxPendingDecodeBytes
            guard machine.inPipeline >= c.maxFramesInPipelinePerConnection
                || pendingDecodeBytes >= c.maxPendingDecodeBytesPerConnection || overTotal
            else { return }
            readingPaused = true
            context?.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            if overTotal, let handle { server.pendingDecode.wait(handle) }
        } else {
            guard machine.inPipeline <= c.maxFramesInPipelinePerConnection / 2,
                pendingDecodeBytes <= c.maxPendingDecodeBytesPerConnection / 2
            else { return }
            guard total < c.maxPendingDecodeBytes else {
                if let handle { server.pendingDecode.wait(handle) }
                return
            }
            readingPaused = false
            context?.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
    }

    // MARK: - Events from other threads (via SessionHandle)

    func pipelineFinished(ticket: UInt64, _ result: PipelineResult) {
        if let bytes = pendingByTicket.removeValue(forKey: ticket) {
            pendingDecodeBytes -= bytes
            server.pendingDecode.release(bytes, limit: server.configuration.maxPendingDecodeBytes)
        }
        guard !machine.isClosed else { return }
        if case .batch(let batch) = result { prepared[ticket] = batch } else { arrivedByTicket[ticket] = nil }
        performAll(machine.decoded(ticket: ticket, result.decoded))
        updateReading()
    }

    func batchCommitted(seq: UInt64, _ outcome: BatchOutcome) {
        let commit: SessionStateMachine.Commit
        switch outcome {
        case .committed(let refused):
            // Rows PostgreSQL refused went to dead_letters: the ack counts them there (rows are already
            // indices in the client's batch, mapped in submit).
            if !refused.isEmpty, var ack = pendingAcks[seq] {
                ack.accepted -= UInt32(clamping: min(refused.count, Int(ack.accepted)))
                ack.rejected += UInt32(clamping: refused.count)
                ack.reasons = Array((ack.reasons + refused.map(Self.rejection)).sorted { $0.index < $1.index }
                    .prefix(ValidatedBatch.maxReasons))
                pendingAcks[seq] = ack
            }
            let ack = pendingAcks[seq]
            commit = .committed(accepted: Int(ack?.accepted ?? 0), rejected: Int(ack?.rejected ?? 0))
        case .duplicate(let accepted, let rejected):
            // The counts of the original outcome, from the database; this resend's validation reasons hold
            // only if they agree with it.
            if var ack = pendingAcks[seq] {
                if Int(ack.rejected) != rejected { ack.reasons = [] }
                ack.accepted = UInt32(clamping: accepted)
                ack.rejected = UInt32(clamping: rejected)
                pendingAcks[seq] = ack
            }
            commit = .duplicate
        case .failed(let reason):
            pendingAcks[seq] = nil
            arrivedBySeq[seq] = nil
            logger.error("batch could not be written", metadata: ["producer": "\(producer.map { "\($0)" } ?? "-")", "seq": "\(seq)", "reason": "\(reason)"])
            commit = .failed(reason)
        }
        performAll(machine.committed(seq: seq, commit))
    }

    /// A reading PostgreSQL refused, as an Ack reason (code 6, REJECT_CODE_DATABASE_REFUSED).
    private static func rejection(_ refused: RefusedReading) -> Rejection {
        var rejection = Rejection()
        rejection.index = UInt32(clamping: refused.row)
        rejection.code = .databaseRefused
        rejection.message = refused.reason
        return rejection
    }

    func creditGranted(_ readings: Int) {
        guard machine.state == .streaming, !closing else { return }
        var credit = Credit()
        credit.readings = UInt64(readings)
        send(ServerFrame(.credit(credit)))
    }

    /// The flow controller needs credit this client holds and does not use: ask for it back (`CreditRecall`).
    func creditRecalled(_ readings: Int) {
        guard !closing, machine.recallSent(now: NIODeadline.now().uptimeNanoseconds) else { return }
        var recall = CreditRecall()
        recall.readings = UInt64(readings)
        send(ServerFrame(.creditRecall(recall)))
    }

    func forceClose() {
        guard let context else { return }
        logger.warning("drain timed out: closing the connection with batches unacknowledged", metadata: ["outstanding": "\(machine.outstanding)"])
        machine.channelClosed()
        context.close(promise: nil)
    }

    func shutdownRequested() {
        perform(machine.shutdownRequested())
    }

    func replacedByNewerSession() {
        perform(machine.replaced())
    }

    func tokenRevoked() {
        guard let tokenID else { return }
        logger.notice("token revoked: closing its session")
        perform(
            machine.wireError(
                WireError(
                    .unauthenticated,
                    "token \(tokenID) was revoked on the server: this session is closed; ask the operator for a valid token")))
    }

    func authenticated(_ result: Result<UInt64, any Error>) {
        guard case .awaitingHello(authenticating: true) = machine.state, let producer else { return }
        switch result {
        case .success(let seq):
            guard server.coordinator.connectionAuthenticated(connectionID, tokenID: tokenID) else {
                perform(
                    machine.helloRejected(
                        WireError(.unauthenticated, "token \(tokenID ?? "-") was revoked while this Hello was checked: ask the operator for a valid token")))
                return
            }
            guard let credit = server.coordinator.openSession(connectionID, producer: producer, returnsCredit: returnsCredit)
            else {
                perform(machine.helloRejected(WireError(.unavailable, "server is shutting down: reconnect in a moment")))
                return
            }
            committedSeq = seq
            initialCredit = credit
            perform(machine.helloAccepted())
        case .failure(let error as WireError):
            perform(machine.helloRejected(error))
        case .failure(let error):
            perform(
                machine.helloRejected(
                    WireError(.unavailable, "cannot read this producer's committed seq from PostgreSQL (\(error)): retry shortly")))
        }
    }

    func tick() {
        let now = NIODeadline.now().uptimeNanoseconds
        machine.bytesReceived(now: progress.lastBytesAt, partialFramePending: progress.partialFramePending)
        perform(machine.tick(now: now))
        if readingPaused { updateReading() }
    }

    // MARK: - Actions

    private func performAll(_ actions: [SessionStateMachine.Action]) {
        for action in actions {
            if closing { return }
            perform(action)
        }
    }

    private func perform(_ action: SessionStateMachine.Action?) {
        guard let action, context != nil, !closing else { return }
        switch action {
        case .authenticate(let hello):
            authenticate(hello)
        case .sendWelcome:
            sendWelcome()
        case .dispatch:
            preconditionFailure("dispatch is handled where the batch frame is")
        case .submit(let ticket, let seq, let readings):
            submit(ticket: ticket, seq: seq, readings: readings)
        case .reject(let ticket, let seq, let readings, let error):
            reject(ticket: ticket, seq: seq, readings: readings, error)
        case .sendAck(let seq, let duplicate):
            var ack = pendingAcks.removeValue(forKey: seq) ?? Ack()
            ack.seq = seq
            ack.duplicate = duplicate
            send(ServerFrame(.ack(ack)))
            if let arrived = arrivedBySeq.removeValue(forKey: seq) {
                server.coordinator.metrics.ackSent(latency: .now - arrived)
            }
        case .sendPong(let nonce):
            var pong = Pong()
            pong.nonce = nonce
            send(ServerFrame(.pong(pong)))
        case .sendPing(let nonce):
            var ping = Ping()
            ping.nonce = nonce
            send(ServerFrame(.ping(ping)))
        case .sendError(let error, let seq, let closing):
            server.coordinator.metrics.errorSent(code: error.code.name)
            var meta: Logger.Metadata = ["code": "\(error.code.name)", "error": "\(error.message)"]
            if seq != 0 { meta["seq"] = "\(seq)" }
            if closing {
                logger.info("closing connection after error", metadata: meta)
            } else {
                logger.info("batch rejected", metadata: meta)
            }
            send(.error(error, seq: seq, closing: closing))
            if closing { closeAfterWrites() }
        case .sendGoAway(let reason, let closing):
            var goAway = GoAway()
            goAway.reason = reason
            goAway.reconnectAfterMs = 1000
            logger.info("sending GoAway", metadata: ["reason": "\(reason)"])
            send(ServerFrame(.goAway(goAway)))
            if closing { closeAfterWrites() }
        case .close:
            closeAfterWrites()
        case .requestCredit(let readings):
            requestCredit(readings)
        case .returnCredit(let readings):
            returnCredit(readings)
        }
    }

    /// A `CreditRequest`, in its turn: more than `max_batch_readings` is a client bug (no batch can be that
    /// big), refused with `INVALID_ARGUMENT` and the connection closed.
    private func requestCredit(_ readings: UInt64) {
        let max = server.configuration.maxBatchReadings
        guard readings <= UInt64(max) else {
            perform(
                machine.wireError(
                    WireError(
                        .invalidArgument,
                        "CreditRequest for \(readings) readings is above max_batch_readings (\(max)) from Welcome: cut batches of at most \(max) readings")))
            return
        }
        server.coordinator.requestCredit(connectionID, readings: Int(readings))
    }

    /// A `CreditReturn`, in its turn: giving back more than the session holds is a client bug
    /// (`RESOURCE_EXHAUSTED`, connection closed), like sending more than it holds.
    private func returnCredit(_ readings: UInt64) {
        guard let held = server.coordinator.creditReturned(connectionID, readings: Int(clamping: readings)) else { return }
        perform(
            machine.wireError(
                WireError(
                    .resourceExhausted,
                    "CreditReturn gives back \(readings) readings but only \(held) credit is held: return at most what Welcome and Credit granted and batches did not use")))
    }

    private func authenticate(_ hello: Hello) {
        switch server.coordinator.authorize(token: hello.token, peerIsLoopback: isLoopbackPeer) {
        case .denied(let error):
            perform(machine.helloRejected(error))
        case .allowed(let prefix, let tokenID):
            guard let producer = ProducerID(bytes: hello.producerID) else {
                preconditionFailure("the state machine checked that producer_id is 16 bytes")
            }
            self.producer = producer
            returnsCredit = hello.creditReturns
            self.devicePrefix = prefix
            self.tokenID = tokenID
            logger[metadataKey: "producer"] = "\(producer)"
            if let tokenID { logger[metadataKey: "token"] = "\(tokenID)" }
            logger.debug("hello", metadata: ["client": "\(hello.clientName) \(hello.clientVersion)"])
            let pool = server.pool
            let owners = tokenID == nil ? nil : server.owners
            let handle = self.handle
            Task {
                let result: Result<UInt64, any Error>
                do {
                    // Ownership first: another token's Hello for this producer gets no session and does not
                    // replace the owner's (anonymous loopback sessions have no token and are not checked).
                    if let owners, let tokenID {
                        let owner = try await owners.claim(producer, tokenID: tokenID)
                        if owner != tokenID {
                            throw WireError(
                                .permissionDenied,
                                "producer \(producer) belongs to another token (\(owner)): use that token, or a new producer id for this one")
                        }
                    }
                    result = .success(try await pool.committedSeq(of: producer))
                } catch {
                    result = .failure(error)
                }
                handle?.authenticated(result)
            }
        }
    }

    private func sendWelcome() {
        let negotiated = server.configuration.frameLimits
        var welcome = Welcome()
        welcome.protocolVersion = sluiceProtocolVersion
        welcome.sessionID = connectionID
        welcome.initialCredit = UInt64(initialCredit)
        welcome.maxBatchReadings = UInt32(clamping: server.configuration.maxBatchReadings)
        welcome.creditRequests = true
        welcome.maxFrameBytes = UInt32(clamping: negotiated.maxFrameBytes)
        welcome.maxDecompressedBytes = UInt32(clamping: negotiated.maxDecompressedBytes)
        welcome.heartbeatIntervalMs = UInt32(clamping: server.configuration.timeouts.heartbeatInterval / 1_000_000)
        welcome.committedSeq = committedSeq
        welcome.compression = .none
        send(ServerFrame(.welcome(welcome)))
        // Only now may frames be larger than the handshake's 64 KiB.
        limits.limits = negotiated
        logger.info(
            "session opened",
            metadata: ["committed_seq": "\(committedSeq)", "initial_credit": "\(initialCredit)", "device_prefix": "\(devicePrefix)"])
    }

    private func submit(ticket: UInt64, seq: UInt64, readings: Int) {
        guard let batch = prepared.removeValue(forKey: ticket) else {
            preconditionFailure("ticket \(ticket) submitted without a prepared batch")
        }
        switch server.coordinator.batchReceived(connectionID, readings: readings) {
        case .violation(let held, let sent):
            perform(machine.creditViolation(seq: seq, held: held, sent: sent))
        case .accepted:
            var ack = Ack()
            ack.seq = seq
            ack.accepted = UInt32(clamping: batch.accepted)
            ack.rejected = UInt32(clamping: batch.rejected)
            ack.reasons = batch.reasons
            pendingAcks[seq] = ack
            arrivedBySeq[seq] = arrivedByTicket.removeValue(forKey: ticket)
            let coordinator = server.coordinator
            let id = connectionID
            let handle = self.handle
            let (accepted, rejected) = (batch.accepted, batch.rejected)
            let rejectedIndices = batch.rejectedIndices
            let start = ContinuousClock.now
            server.pool.submit(batch.write) { outcome in
                // Runs on a writer thread after COMMIT: free the budget first, then hop to the session for the ack.
                let outcome = outcome.mappingRefusedRows {
                    PreparedBatch.wireIndex(ofRow: $0, rejectedIndices: rejectedIndices)
                }
                let refused = outcome.refused.count
                coordinator.metrics.batchFinished(
                    outcome, accepted: accepted - refused, rejected: rejected + refused, latency: .now - start)
                coordinator.batchFinished(id, readings: readings)
                handle?.committed(seq: seq, outcome)
            }
        }
    }

    private func reject(ticket: UInt64, seq: UInt64, readings: Int, _ error: WireError) {
        prepared[ticket] = nil
        arrivedByTicket[ticket] = nil
        switch server.coordinator.batchReceived(connectionID, readings: readings) {
        case .violation(let held, let sent):
            perform(machine.creditViolation(seq: seq, held: held, sent: sent))
        case .accepted:
            server.coordinator.metrics.batchRejected()
            server.coordinator.batchFinished(connectionID, readings: readings)
            perform(.sendError(error, seq: seq, closing: false))
        }
    }

    // MARK: - Writing

    private func send(_ frame: ServerFrame) {
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(frame), promise: promise)
        lastWrite = promise.futureResult
        scheduleFlush()
    }

    /// Flushes once per turn of the event loop, however many frames were written: acks that commit together
    /// leave in one syscall.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.context?.flush()
        }
    }

    /// Closes once everything written so far has left (or after 2 s if the peer stopped reading).
    private func closeAfterWrites() {
        guard let context, !closing else { return }
        closing = true
        context.flush()
        let channel = context.channel
        let close = { channel.close(promise: nil) }
        if let lastWrite {
            lastWrite.assumeIsolated().whenComplete { _ in close() }
            context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) { close() }
        } else {
            close()
        }
    }
}

@available(*, unavailable)
extension SessionHandler: Sendable {}
