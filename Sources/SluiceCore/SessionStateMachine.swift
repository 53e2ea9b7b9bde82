import SluiceProtocol

/// One connection's protocol state, as a value: awaiting preface → awaiting hello → streaming → draining →
/// closed (DESIGN §2).
///
/// The channel handler feeds it events (frames, pipeline results, commits, timer ticks, shutdown) and performs
/// the actions it returns; the machine never touches a socket, so every transition, legal or not, is tested
/// with plain values. Once closed, every event returns no action: late pipeline results and commits of a
/// connection that died are dropped here rather than checked for everywhere else.
public struct SessionStateMachine: Sendable {
    public enum State: Sendable, Equatable {
        /// Connected; the 4-byte preface has not arrived yet.
        case awaitingPreface
        /// Preface seen. `authenticating`: a `Hello` arrived and the handler is checking it.
        case awaitingHello(authenticating: Bool)
        /// Welcome sent; batches flow.
        case streaming
        /// GoAway sent: batches already sent are finished and acked, then the connection closes.
        case draining
        case closed
    }

    /// Deadlines, in nanoseconds of a monotonic clock.
    public struct Timeouts: Sendable, Equatable {
        /// Preface and `Hello` must arrive, and the token be checked, within this after connecting (5 s).
        public var handshake: UInt64
        /// The interval `Welcome` announces; a peer silent for 3 of them is dead. The server pings this often.
        public var heartbeatInterval: UInt64
        /// A frame started but not finished, with no bytes for this long, is a stalled (or malicious) peer.
        public var frameStall: UInt64

        public init(
            handshake: UInt64 = 5_000_000_000, heartbeatInterval: UInt64 = 5_000_000_000,
            frameStall: UInt64 = 10_000_000_000
        ) {
            self.handshake = handshake
            self.heartbeatInterval = heartbeatInterval
            self.frameStall = frameStall
        }
    }

    /// A batch frame's fate after the pipeline decoded and validated it.
    public enum Decoded: Sendable, Equatable {
        /// Structurally sound; the handler keeps the validated payload under the ticket.
        case batch(seq: UInt64, readings: Int)
        /// Rejected whole (`INVALID_ARGUMENT`, `PERMISSION_DENIED`): not written, not acked; the session goes on.
        case rejected(seq: UInt64, readings: Int, WireError)
        /// Undecodable (`PROTOCOL_ERROR`, `FRAME_TOO_LARGE`, …): the connection closes.
        case broken(WireError)
        /// A compressed frame that turned out to be a `Ping`.
        case ping(nonce: UInt64)
        /// A compressed frame that turned out to be a `Pong`.
        case pong
        /// A compressed frame that turned out to be a `Hello`.
        case hello
        /// A `CreditRequest`: the client needs to hold this much credit in all to send its next batch.
        case creditRequest(readings: UInt64)
        /// A `CreditReturn`: the client gave back this much of the credit it held.
        case creditReturn(readings: UInt64)
    }

    /// What the commit of a batch came to (mirrors the writer pool's outcome without depending on it).
    public enum Commit: Sendable, Equatable {
        case committed(accepted: Int, rejected: Int)
        case duplicate
        case failed(String)
    }

    /// What the handler must do.
    public enum Action: Sendable, Equatable {
        /// Check the `Hello` (token, producer identity), then report `helloAccepted` or `helloRejected`.
        case authenticate(Hello)
        /// The session is open: send `Welcome` and raise the frame limits.
        case sendWelcome
        /// Hand the batch frame just received to the pipeline under this ticket.
        case dispatch(ticket: UInt64)
        /// The batch under `ticket` is next in arrival order: charge its credit, then submit it to the writer.
        case submit(ticket: UInt64, seq: UInt64, readings: Int)
        /// The batch under `ticket` was rejected whole: charge and refund its credit, send this error (not
        /// closing).
        case reject(ticket: UInt64, seq: UInt64, readings: Int, WireError)
        case sendAck(seq: UInt64, duplicate: Bool)
        case sendPong(nonce: UInt64)
        case sendPing(nonce: UInt64)
        /// Send an `Error`; if `closing`, close the connection after it is flushed.
        case sendError(WireError, seq: UInt64, closing: Bool)
        /// Send `GoAway`; if `closing`, close the connection after it is flushed.
        case sendGoAway(reason: String, closing: Bool)
        /// Close the connection (everything it is owed has been sent).
        case close
        /// The client asked to hold `readings` credit in all (`CreditRequest`), in arrival order: every batch it
        /// sent before the request has been charged already. The handler checks the bound and passes it on.
        case requestCredit(readings: UInt64)
        /// The client gave back `readings` credit (`CreditReturn`), in arrival order: every batch it sent before
        /// has been charged already. The handler returns it to the flow controller.
        case returnCredit(readings: UInt64)
    }

    public private(set) var state: State = .awaitingPreface
    public let timeouts: Timeouts
    private let openedAt: UInt64
    private var lastFrameAt: UInt64
    private var lastBytesAt: UInt64
    private var partialFramePending = false
    private var lastPingAt: UInt64
    private var pingNonce: UInt64 = 0
    private var resequencer = Resequencer<Decoded>()
    /// Highest seq admitted on this session: seqs must strictly increase.
    public private(set) var lastSeq: UInt64 = 0
    /// Batches submitted to the writer and not yet committed.
    public private(set) var awaitingCommit = 0
    /// When the oldest unanswered `CreditRecall` went out (nil: none is).
    private var recallSentAt: UInt64?

    public init(now: UInt64, timeouts: Timeouts = Timeouts()) {
        self.timeouts = timeouts
        self.openedAt = now
        self.lastFrameAt = now
        self.lastBytesAt = now
        self.lastPingAt = now
    }

    /// Batches received and not yet acked or rejected: in the pipeline, waiting their turn, or being written.
    public var outstanding: Int { resequencer.pending + awaitingCommit }

    public var isClosed: Bool { state == .closed }

    /// Frames handed to the pipeline and not yet released in order (the handler stops reading above a bound).
    public var inPipeline: Int { resequencer.pending }

    // MARK: - Bytes and frames

    /// Bytes arrived; `partialFramePending` says whether the decoder now holds part of a frame.
    public mutating func bytesReceived(now: UInt64, partialFramePending: Bool) {
        lastBytesAt = now
        self.partialFramePending = partialFramePending
    }

    /// The frame decoder verified the 4-byte preface.
    public mutating func prefaceReceived() -> Action? {
        switch state {
        case .awaitingPreface:
            state = .awaitingHello(authenticating: false)
            return nil
        case .closed:
            return nil
        case .awaitingHello, .streaming, .draining:
            preconditionFailure("the frame decoder reports the preface once, before any frame")
        }
    }

    /// A whole frame arrived (any kind): the peer is alive.
    public mutating func frameReceived(now: UInt64) {
        lastFrameAt = now
    }

    public mutating func helloReceived(_ hello: Hello) -> Action? {
        switch state {
        case .awaitingHello(authenticating: false):
            if hello.protocolVersion != sluiceProtocolVersion {
                return fail(
                    WireError(
                        .unimplemented,
                        "protocol version \(hello.protocolVersion) is not supported: this server speaks version \(sluiceProtocolVersion)"))
            }
            if hello.producerID.count != 16 {
                return fail(
                    WireError(
                        .invalidArgument,
                        "producer_id is \(hello.producerID.count) bytes: it must be exactly 16 (a UUID), stable across restarts"))
            }
            state = .awaitingHello(authenticating: true)
            return .authenticate(hello)
        case .awaitingHello(authenticating: true), .streaming, .draining:
            return fail(WireError(.failedPrecondition, "Hello sent twice: a session sends Hello once, first"))
        case .awaitingPreface:
            preconditionFailure("frames are only decoded after the preface")
        case .closed:
            return nil
        }
    }

    public mutating func helloAccepted() -> Action? {
        switch state {
        case .awaitingHello(authenticating: true):
            state = .streaming
            return .sendWelcome
        case .closed:
            return nil  // the connection went away while the Hello was being checked
        case .draining:
            // Shutdown began while the Hello was being checked; it was told so already.
            return nil
        case .awaitingPreface, .awaitingHello(authenticating: false), .streaming:
            preconditionFailure("helloAccepted without a Hello being checked (state \(state))")
        }
    }

    public mutating func helloRejected(_ error: WireError) -> Action? {
        switch state {
        case .awaitingHello(authenticating: true):
            return fail(error)
        case .closed, .draining:
            return nil
        case .awaitingPreface, .awaitingHello(authenticating: false), .streaming:
            preconditionFailure("helloRejected without a Hello being checked (state \(state))")
        }
    }

    /// A frame that is (or, compressed, may be) a `Batch` arrived.
    public mutating func batchFrameReceived() -> Action? {
        switch state {
        case .streaming, .draining:
            // Batches sent before the client saw GoAway are still finished and acked while draining.
            return .dispatch(ticket: resequencer.take())
        case .awaitingHello:
            return fail(WireError(.failedPrecondition, "Batch before the session is open: send Hello and wait for Welcome"))
        case .awaitingPreface:
            preconditionFailure("frames are only decoded after the preface")
        case .closed:
            return nil
        }
    }

    /// An uncompressed `CreditRequest` arrived (decoded on the loop). It takes its turn behind the batch frames
    /// still in the pipeline, so the credit it asks for is measured after they are charged.
    public mutating func creditRequestReceived(readings: UInt64) -> [Action] {
        switch state {
        case .streaming, .draining:
            return decoded(ticket: resequencer.take(), .creditRequest(readings: readings))
        case .awaitingHello:
            return [fail(WireError(.failedPrecondition, "CreditRequest before the session is open: send Hello and wait for Welcome"))]
        case .awaitingPreface:
            preconditionFailure("frames are only decoded after the preface")
        case .closed:
            return []
        }
    }

    /// The server is about to send a `CreditRecall`: true if it may (only an open session is asked), and the
    /// client must answer within the recall timeout (3 heartbeat intervals) or the connection closes.
    public mutating func recallSent(now: UInt64) -> Bool {
        guard state == .streaming else { return false }
        if recallSentAt == nil { recallSentAt = now }
        return true
    }

    /// An uncompressed `CreditReturn` arrived (decoded on the loop). Like a request it takes its turn behind
    /// the batch frames still in the pipeline, so the batches sent before it are charged first; the recall
    /// counts as answered now.
    public mutating func creditReturnReceived(readings: UInt64) -> [Action] {
        switch state {
        case .streaming, .draining:
            recallSentAt = nil
            return decoded(ticket: resequencer.take(), .creditReturn(readings: readings))
        case .awaitingHello:
            return [fail(WireError(.failedPrecondition, "CreditReturn before the session is open: send Hello and wait for Welcome"))]
        case .awaitingPreface:
            preconditionFailure("frames are only decoded after the preface")
        case .closed:
            return []
        }
    }

    public mutating func pingReceived(nonce: UInt64) -> Action? {
        state == .closed ? nil : .sendPong(nonce: nonce)
    }

    /// The pipeline finished the frame under `ticket`. Returns the actions for every frame whose turn came, in
    /// arrival order.
    public mutating func decoded(ticket: UInt64, _ result: Decoded) -> [Action] {
        guard state != .closed else { return [] }
        var actions: [Action] = []
        for released in resequencer.finish(ticket, result) {
            if state == .closed { break }
            if let action = admit(released.item, ticket: released.ticket) { actions.append(action) }
        }
        if let close = drainedAction() { actions.append(close) }
        return actions
    }

    private mutating func admit(_ item: Decoded, ticket: UInt64) -> Action? {
        switch item {
        case .batch(let seq, let readings):
            guard seq > lastSeq else {
                return .reject(
                    ticket: ticket, seq: seq, readings: readings,
                    WireError(
                        .invalidArgument,
                        "batch seq \(seq) is not above the previous seq \(lastSeq) on this session: seqs strictly increase"))
            }
            lastSeq = seq
            awaitingCommit += 1
            return .submit(ticket: ticket, seq: seq, readings: readings)
        case .rejected(let seq, let readings, let error):
            return .reject(ticket: ticket, seq: seq, readings: readings, error)
        case .broken(let error):
            return fail(error)
        case .ping(let nonce):
            return .sendPong(nonce: nonce)
        case .pong:
            return nil
        case .creditRequest(let readings):
            // While draining no credit is granted: the client only waits for its acks.
            return state == .streaming ? .requestCredit(readings: readings) : nil
        case .creditReturn(let readings):
            recallSentAt = nil
            return .returnCredit(readings: readings)
        case .hello:
            return fail(WireError(.failedPrecondition, "Hello sent twice: a session sends Hello once, first"))
        }
    }

    /// The batch's credit check failed: `RESOURCE_EXHAUSTED`, connection closed.
    public mutating func creditViolation(seq: UInt64, held: Int, sent: Int) -> Action? {
        guard state != .closed else { return nil }
        return fail(
            WireError(
                .resourceExhausted,
                "batch \(seq) holds \(sent) readings but only \(held) credit was held: wait for Credit before sending more"),
            seq: seq)
    }

    /// The writer finished the batch `seq` (commits arrive in submission order).
    public mutating func committed(seq: UInt64, _ commit: Commit) -> [Action] {
        guard state != .closed else { return [] }
        precondition(awaitingCommit > 0, "commit of batch \(seq) that was never submitted")
        awaitingCommit -= 1
        var actions: [Action]
        switch commit {
        case .committed:
            actions = [.sendAck(seq: seq, duplicate: false)]
        case .duplicate:
            actions = [.sendAck(seq: seq, duplicate: true)]
        case .failed(let reason):
            actions = [.sendError(WireError(.internal, "batch \(seq) could not be written: \(reason)"), seq: seq, closing: false)]
        }
        if let close = drainedAction() { actions.append(close) }
        return actions
    }

    // MARK: - Lifecycle

    /// The server is shutting down.
    public mutating func shutdownRequested(reconnectAfterMs: UInt32 = 1000) -> Action? {
        switch state {
        case .awaitingPreface, .awaitingHello:
            return fail(WireError(.unavailable, "server is shutting down: reconnect in a moment"))
        case .streaming:
            state = .draining
            return .sendGoAway(reason: "server draining", closing: outstanding == 0 ? closeNow() : false)
        case .draining, .closed:
            return nil
        }
    }

    /// A newer session for the same producer opened: this one ends.
    public mutating func replaced() -> Action? {
        switch state {
        case .streaming, .draining:
            state = .closed
            return .sendGoAway(reason: "session replaced by a newer one for the same producer", closing: true)
        case .awaitingPreface, .awaitingHello:
            preconditionFailure("only an open session can be replaced")
        case .closed:
            return nil
        }
    }

    /// The frame decoder (or anything else on the wire) failed: tell the peer, close.
    public mutating func wireError(_ error: WireError) -> Action? {
        guard state != .closed else { return nil }
        return fail(error)
    }

    /// The connection is gone (closed by either side).
    public mutating func channelClosed() {
        state = .closed
    }

    /// Periodic check of deadlines; the handler calls it about every second (or more often in tests).
    public mutating func tick(now: UInt64) -> Action? {
        switch state {
        case .closed:
            return nil
        case .awaitingPreface, .awaitingHello:
            // The deadline covers authentication too: a token check or ownership lookup that hangs (a slow
            // database) does not keep an unauthenticated connection open.
            if now &- openedAt > timeouts.handshake {
                let limit = seconds(timeouts.handshake)
                let message =
                    switch state {
                    case .awaitingPreface: "the preface \"SLU1\" did not arrive within \(limit) of connecting"
                    case .awaitingHello(authenticating: true):
                        "the handshake (Hello and its authentication) did not finish within \(limit) of connecting: retry shortly"
                    default: "Hello did not arrive within \(limit) of connecting"
                    }
                return fail(WireError(.failedPrecondition, message))
            }
            return nil
        case .streaming, .draining:
            if partialFramePending && now &- lastBytesAt > timeouts.frameStall {
                return fail(
                    WireError(
                        .protocolError,
                        "a frame was started and then nothing arrived for \(seconds(timeouts.frameStall)): send whole frames without stalling"))
            }
            if now &- lastFrameAt > 3 * timeouts.heartbeatInterval {
                return fail(
                    WireError(
                        .unavailable,
                        "no frame for 3 heartbeat intervals (\(seconds(3 * timeouts.heartbeatInterval))): peer considered dead; answer Ping with Pong"))
            }
            if let sent = recallSentAt, state == .streaming, now &- sent > 3 * timeouts.heartbeatInterval {
                return fail(
                    WireError(
                        .failedPrecondition,
                        "CreditRecall not answered within 3 heartbeat intervals (\(seconds(3 * timeouts.heartbeatInterval))): answer every CreditRecall with CreditReturn, or do not set Hello.credit_returns"))
            }
            if now &- lastPingAt >= timeouts.heartbeatInterval {
                lastPingAt = now
                pingNonce += 1
                return .sendPing(nonce: pingNonce)
            }
            return nil
        }
    }

    // MARK: - Helpers

    private mutating func fail(_ error: WireError, seq: UInt64 = 0) -> Action {
        state = .closed
        return .sendError(error, seq: seq, closing: true)
    }

    private mutating func closeNow() -> Bool {
        state = .closed
        return true
    }

    private mutating func drainedAction() -> Action? {
        guard state == .draining, outstanding == 0 else { return nil }
        state = .closed
        return .close
    }

    private func seconds(_ nanos: UInt64) -> String {
        let s = Double(nanos) / 1e9
        return s == s.rounded() ? "\(Int(s)) s" : "\(s) s"
    }
}
