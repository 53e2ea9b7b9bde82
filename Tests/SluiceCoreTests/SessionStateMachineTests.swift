import Foundation
import SluiceProtocol
import Testing

@testable import SluiceCore

@Suite struct SessionStateMachineTests {
    typealias M = SessionStateMachine
    let second: UInt64 = 1_000_000_000

    func hello(version: UInt32 = 1, producer: Int = 16) -> Hello {
        var h = Hello()
        h.protocolVersion = version
        h.producerID = Data((0..<producer).map { UInt8($0) })
        return h
    }

    func streaming() -> M {
        var m = M(now: 0, timeouts: .init(handshake: 10 * second, heartbeatInterval: 5 * second, frameStall: 2 * second))
        _ = m.prefaceReceived()
        _ = m.helloReceived(hello())
        #expect(m.helloAccepted() == .sendWelcome)
        return m
    }

    func errorCode(_ action: M.Action?) -> StatusCode? {
        if case .sendError(let e, _, true) = action { return e.code }
        return nil
    }

    // MARK: handshake

    @Test func prefaceThenHelloThenAcceptanceOpensTheSession() {
        var m = M(now: 0)
        #expect(m.state == .awaitingPreface)
        #expect(m.prefaceReceived() == nil)
        #expect(m.state == .awaitingHello(authenticating: false))
        #expect(m.helloReceived(hello()) == .authenticate(hello()))
        #expect(m.state == .awaitingHello(authenticating: true))
        #expect(m.helloAccepted() == .sendWelcome)
        #expect(m.state == .streaming)
    }

    @Test func unsupportedProtocolVersionIsUnimplementedAndCloses() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        let action = m.helloReceived(hello(version: 2))
        #expect(errorCode(action) == .unimplemented)
        #expect(m.state == .closed)
    }

    @Test func producerIDOfTheWrongLengthIsInvalidArgument() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        #expect(errorCode(m.helloReceived(hello(producer: 15))) == .invalidArgument)
    }

    @Test func rejectedHelloSendsTheErrorAndCloses() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        _ = m.helloReceived(hello())
        let denial = WireError(.unauthenticated, "unknown token")
        #expect(m.helloRejected(denial) == .sendError(denial, seq: 0, closing: true))
        #expect(m.isClosed)
    }

    @Test func secondHelloWhileTheFirstIsCheckedIsFailedPrecondition() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        _ = m.helloReceived(hello())
        #expect(errorCode(m.helloReceived(hello())) == .failedPrecondition)
    }

    @Test func helloOnAnOpenSessionIsFailedPrecondition() {
        var m = streaming()
        #expect(errorCode(m.helloReceived(hello())) == .failedPrecondition)
    }

    @Test func batchBeforeWelcomeIsFailedPrecondition() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        #expect(errorCode(m.batchFrameReceived()) == .failedPrecondition)
        #expect(m.isClosed)
    }

    @Test func helloAcceptedAfterTheConnectionClosedDoesNothing() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        _ = m.helloReceived(hello())
        m.channelClosed()
        #expect(m.helloAccepted() == nil)
        #expect(m.helloRejected(WireError(.internal, "x")) == nil)
    }

    @Test func handshakeMustFinishInTime() {
        var m = M(now: 0, timeouts: .init(handshake: 10 * second))
        #expect(m.tick(now: 9 * second) == nil)
        let action = m.tick(now: 11 * second)
        #expect(errorCode(action) == .failedPrecondition)
        if case .sendError(let e, _, _) = action {
            #expect(e.message == "the preface \"SLU1\" did not arrive within 10 s of connecting")
        }
    }

    @Test func helloMustArriveInTimeAfterThePreface() {
        var m = M(now: 0, timeouts: .init(handshake: 10 * second))
        _ = m.prefaceReceived()
        guard case .sendError(let e, _, true) = m.tick(now: 11 * second) else {
            Issue.record("expected a timeout")
            return
        }
        #expect(e.message == "Hello did not arrive within 10 s of connecting")
    }

    // MARK: batches

    @Test func batchesAreDispatchedWithIncreasingTickets() {
        var m = streaming()
        #expect(m.batchFrameReceived() == .dispatch(ticket: 0))
        #expect(m.batchFrameReceived() == .dispatch(ticket: 1))
        #expect(m.outstanding == 2)
    }

    @Test func decodedBatchesAreSubmittedInArrivalOrder() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        #expect(m.decoded(ticket: 2, .batch(seq: 3, readings: 30)).isEmpty)
        #expect(m.decoded(ticket: 1, .batch(seq: 2, readings: 20)).isEmpty)
        #expect(
            m.decoded(ticket: 0, .batch(seq: 1, readings: 10)) == [
                .submit(ticket: 0, seq: 1, readings: 10), .submit(ticket: 1, seq: 2, readings: 20),
                .submit(ticket: 2, seq: 3, readings: 30),
            ])
        #expect(m.awaitingCommit == 3 && m.lastSeq == 3)
    }

    @Test func commitsAreAckedWithTheDuplicateFlag() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        _ = m.decoded(ticket: 0, .batch(seq: 1, readings: 1))
        _ = m.decoded(ticket: 1, .batch(seq: 2, readings: 1))
        #expect(m.committed(seq: 1, .committed(accepted: 1, rejected: 0)) == [.sendAck(seq: 1, duplicate: false)])
        #expect(m.committed(seq: 2, .duplicate) == [.sendAck(seq: 2, duplicate: true)])
        #expect(m.outstanding == 0)
    }

    @Test func failedWriteIsAnErrorThatKeepsTheSessionOpen() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.decoded(ticket: 0, .batch(seq: 9, readings: 1))
        let actions = m.committed(seq: 9, .failed("value out of range"))
        guard case .sendError(let e, 9, false) = actions.first else {
            Issue.record("expected an error for seq 9, got \(actions)")
            return
        }
        #expect(e.message.contains("value out of range"))
        #expect(m.state == .streaming)
    }

    @Test func seqNotAboveThePreviousIsRejectedNotSubmitted() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        _ = m.decoded(ticket: 0, .batch(seq: 5, readings: 1))
        let actions = m.decoded(ticket: 1, .batch(seq: 5, readings: 2))
        guard case .reject(1, 5, 2, let e) = actions.first else {
            Issue.record("expected a rejection, got \(actions)")
            return
        }
        #expect(e.code == .invalidArgument)
        #expect(m.state == .streaming)
    }

    @Test func structurallyBrokenBatchIsRejectedAndTheSessionGoesOn() {
        var m = streaming()
        _ = m.batchFrameReceived()
        let error = WireError(.invalidArgument, "columns differ")
        #expect(m.decoded(ticket: 0, .rejected(seq: 4, readings: 3, error)) == [.reject(ticket: 0, seq: 4, readings: 3, error)])
        #expect(m.state == .streaming && m.outstanding == 0)
    }

    @Test func undecodableFrameClosesTheSessionAndDropsLaterResults() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        _ = m.batchFrameReceived()
        _ = m.decoded(ticket: 2, .batch(seq: 3, readings: 1))
        let broken = WireError(.protocolError, "garbage")
        let actions = m.decoded(ticket: 0, .batch(seq: 1, readings: 1)) + m.decoded(ticket: 1, .broken(broken))
        #expect(actions == [.submit(ticket: 0, seq: 1, readings: 1), .sendError(broken, seq: 0, closing: true)])
        #expect(m.isClosed)
        #expect(m.committed(seq: 1, .committed(accepted: 1, rejected: 0)).isEmpty)
    }

    @Test func compressedControlFramesAreAnsweredInOrder() {
        var m = streaming()
        _ = m.batchFrameReceived()
        #expect(m.decoded(ticket: 0, .ping(nonce: 7)) == [.sendPong(nonce: 7)])
        _ = m.batchFrameReceived()
        #expect(m.decoded(ticket: 1, .pong).isEmpty)
        _ = m.batchFrameReceived()
        #expect(errorCode(m.decoded(ticket: 2, .hello).first) == .failedPrecondition)
    }

    @Test func creditViolationClosesWithResourceExhausted() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.decoded(ticket: 0, .batch(seq: 1, readings: 50))
        let action = m.creditViolation(seq: 1, held: 10, sent: 50)
        guard case .sendError(let e, 1, true) = action else {
            Issue.record("expected RESOURCE_EXHAUSTED, got \(String(describing: action))")
            return
        }
        #expect(e.code == .resourceExhausted)
        #expect(e.message == "batch 1 holds 50 readings but only 10 credit was held: wait for Credit before sending more")
    }

    @Test func pingIsAnsweredWithItsNonce() {
        var m = streaming()
        #expect(m.pingReceived(nonce: 42) == .sendPong(nonce: 42))
    }

    // MARK: liveness

    @Test func serverPingsOnceEveryHeartbeatInterval() {
        var m = streaming()
        #expect(m.tick(now: 4 * second) == nil)
        #expect(m.tick(now: 5 * second) == .sendPing(nonce: 1))
        m.frameReceived(now: 5 * second)
        #expect(m.tick(now: 6 * second) == nil)
        #expect(m.tick(now: 10 * second) == .sendPing(nonce: 2))
    }

    @Test func peerSilentForThreeIntervalsIsDead() {
        var m = streaming()
        m.frameReceived(now: 1 * second)
        _ = m.tick(now: 5 * second)
        _ = m.tick(now: 10 * second)
        #expect(m.tick(now: 15 * second) == .sendPing(nonce: 3))
        #expect(errorCode(m.tick(now: 16 * second + 1)) == .unavailable)
    }

    @Test func frameStartedThenStalledIsDropped() {
        var m = streaming()
        m.frameReceived(now: 1 * second)
        m.bytesReceived(now: 1 * second, partialFramePending: true)
        #expect(m.tick(now: 2 * second) == nil)
        #expect(errorCode(m.tick(now: 3 * second + 1)) == .protocolError)
    }

    @Test func quietPeerBetweenWholeFramesIsNotStalled() {
        var m = streaming()
        m.bytesReceived(now: 1 * second, partialFramePending: false)
        m.frameReceived(now: 1 * second)
        #expect(m.tick(now: 4 * second) == nil)
    }

    // MARK: shutdown and takeover

    @Test func shutdownWithNothingOutstandingSendsGoAwayAndCloses() {
        var m = streaming()
        #expect(m.shutdownRequested() == .sendGoAway(reason: "server draining", closing: true))
        #expect(m.isClosed)
    }

    @Test func drainingFinishesOutstandingBatchesThenCloses() {
        var m = streaming()
        _ = m.batchFrameReceived()
        #expect(m.shutdownRequested() == .sendGoAway(reason: "server draining", closing: false))
        #expect(m.state == .draining)
        // A batch the client sent before it saw GoAway is still taken.
        #expect(m.batchFrameReceived() == .dispatch(ticket: 1))
        _ = m.decoded(ticket: 0, .batch(seq: 1, readings: 1))
        _ = m.decoded(ticket: 1, .batch(seq: 2, readings: 1))
        #expect(m.committed(seq: 1, .committed(accepted: 1, rejected: 0)) == [.sendAck(seq: 1, duplicate: false)])
        #expect(m.committed(seq: 2, .duplicate) == [.sendAck(seq: 2, duplicate: true), .close])
        #expect(m.isClosed)
    }

    @Test func drainingEndsWhenTheLastBatchIsRejected() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.shutdownRequested()
        let error = WireError(.invalidArgument, "x")
        #expect(m.decoded(ticket: 0, .rejected(seq: 1, readings: 1, error)) == [.reject(ticket: 0, seq: 1, readings: 1, error), .close])
    }

    @Test func shutdownBeforeTheHandshakeIsUnavailable() {
        var m = M(now: 0)
        _ = m.prefaceReceived()
        #expect(errorCode(m.shutdownRequested()) == .unavailable)
    }

    @Test func shutdownTwiceDoesNothingTheSecondTime() {
        var m = streaming()
        _ = m.batchFrameReceived()
        _ = m.shutdownRequested()
        #expect(m.shutdownRequested() == nil)
    }

    @Test func replacedSessionGetsGoAwayAndCloses() {
        var m = streaming()
        #expect(m.replaced() == .sendGoAway(reason: "session replaced by a newer one for the same producer", closing: true))
        #expect(m.isClosed)
        #expect(m.replaced() == nil)
    }

    @Test func wireErrorClosesWithThatError() {
        var m = streaming()
        let e = WireError(.frameTooLarge, "too big")
        #expect(m.wireError(e) == .sendError(e, seq: 0, closing: true))
        #expect(m.wireError(e) == nil, "only the first error is sent")
    }

    @Test func closedSessionIgnoresEveryEvent() {
        var m = streaming()
        m.channelClosed()
        #expect(m.batchFrameReceived() == nil)
        #expect(m.pingReceived(nonce: 1) == nil)
        #expect(m.helloReceived(hello()) == nil)
        #expect(m.tick(now: 100 * second) == nil)
        #expect(m.shutdownRequested() == nil)
        #expect(m.prefaceReceived() == nil)
    }
}

