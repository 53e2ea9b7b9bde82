/// The readings this client may still send on the current session (DESIGN §2, Credit).
///
/// `Welcome` opens the window, each `Credit` frame widens it, each batch sent and each `CreditReturn` narrows it.
/// Sending more than is held is a protocol violation the server answers by closing, so `consume` traps on it:
/// the planner must have checked `allows` first.
public struct CreditWindow: Sendable, Equatable {
    public private(set) var held: UInt64

    public init(initial: UInt64 = 0) { held = initial }

    /// A new session: whatever was held on the old one is gone.
    public mutating func reset(initial: UInt64) { held = initial }

    public mutating func grant(_ readings: UInt64) { held = held.addingReportingOverflow(readings).overflow ? .max : held + readings }

    /// The server recalled up to `readings` (`CreditRecall`): gives back what is held, at most that much, and
    /// returns it (the `CreditReturn` to send, possibly 0).
    public mutating func giveBack(upTo readings: UInt64) -> UInt64 {
        let given = min(readings, held)
        held -= given
        return given
    }

    public func allows(_ readings: Int) -> Bool { UInt64(readings) <= held }

    public mutating func consume(_ readings: Int) {
        precondition(allows(readings), "batch of \(readings) readings sent with only \(held) credit")
        held -= UInt64(readings)
    }
}

/// What the sender should do next, decided from plain values (no I/O), so every case is unit tested.
public enum TransmitDecision: Sendable, Equatable {
    /// Resend the oldest unacked batch not yet sent on this session.
    case resend
    /// Cut a new batch of this many readings from the pending queue.
    case cut(readings: Int)
    /// Something is waiting to go but the credit held is too small.
    case waitForCredit
    /// Nothing to send.
    case idle
}

public enum TransmitPlanner {
    /// - Parameters:
    ///   - credit: readings the server allows now.
    ///   - nextResendReadings: size of the oldest batch to resend on this session, if any. Resends come first
    ///     and are never split: their seq is fixed, and the server may already hold part of the old one.
    ///   - pendingReadings: readings queued but not yet cut into batches.
    ///   - maxBatchReadings: the smaller of the client's batch size and the server's `max_batch_readings`.
    public static func decide(
        credit: UInt64, nextResendReadings: Int?, pendingReadings: Int, maxBatchReadings: Int
    ) -> TransmitDecision {
        if let resend = nextResendReadings {
            return UInt64(resend) <= credit ? .resend : .waitForCredit
        }
        guard pendingReadings > 0 else { return .idle }
        guard credit > 0 else { return .waitForCredit }
        // A batch that does not fit is split: what the credit allows goes now, the rest when credit arrives.
        let n = min(UInt64(pendingReadings), UInt64(max(1, maxBatchReadings)), credit)
        return .cut(readings: Int(n))
    }
}

/// What to ask a server that reads `CreditRequest` for, decided from plain values (unit tested).
public enum CreditPlanner {
    /// The credit the next batch needs, or nil when there is nothing to ask for: the oldest unacked batch to
    /// resend (never split, so it needs its whole size), else a new batch of what is pending up to
    /// `maxBatchReadings`. A resend bigger than the server's `max_batch_readings` (`serverMaxBatchReadings`,
    /// 0 = none stated) cannot be asked for: no request (the server would refuse it).
    public static func need(
        nextResendReadings: Int?, pendingReadings: Int, maxBatchReadings: Int, serverMaxBatchReadings: Int
    ) -> UInt64? {
        let n: Int
        if let resend = nextResendReadings {
            n = resend
        } else {
            n = min(pendingReadings, max(1, maxBatchReadings))
        }
        guard n > 0 else { return nil }
        if serverMaxBatchReadings > 0 && n > serverMaxBatchReadings { return nil }
        return UInt64(n)
    }
}
