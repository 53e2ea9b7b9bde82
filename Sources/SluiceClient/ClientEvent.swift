import SluiceProtocol

/// Something that happened on a client, delivered through `SluiceClient.events`.
public enum ClientEvent: Sendable {
    /// A session opened (after the handshake).
    case connected(endpoint: Endpoint, sessionID: UInt64, committedSeq: UInt64)
    /// A connection attempt failed or a session ended; the client reconnects by itself after `retryIn`.
    case disconnected(endpoint: Endpoint, reason: String, retryIn: Duration)
    /// A batch is durable.
    case acked(BatchAck)
    /// The server rejected a batch whole; it will not be resent.
    case rejected(BatchRejection)
    /// The server sent an error not about one batch, or the client failed for good (then `send` throws too).
    case error(ClientError)
}

/// The server acknowledged a batch: its transaction committed (or it had been committed before).
public struct BatchAck: Sendable, Equatable {
    public var seq: UInt64
    /// Readings in the batch.
    public var readings: Int
    /// Written to `readings` / to the dead-letter table. For a duplicate, the counts of the batch's original
    /// outcome (a batch found committed through `Welcome.committed_seq` is resent to learn them).
    public var accepted: Int
    public var rejected: Int
    public var duplicate: Bool
    /// The first few rejected readings with the server's reason.
    public var rejections: [ReadingRejection]
    /// From the first transmission to the ack.
    public var latency: Duration?
    /// From the moment `send` queued the oldest reading (or the caller's `enqueuedAt`) to the ack.
    public var sinceEnqueued: Duration
}

/// One reading the server put in the dead-letter table, with why.
public struct ReadingRejection: Sendable, Equatable {
    public var index: Int
    public var code: String
    public var reason: String
    /// The reading itself, when the client could find it in the batch.
    public var reading: Reading?
}

/// A batch the server refused whole (e.g. `INVALID_ARGUMENT`); it is dropped from the resend buffer.
public struct BatchRejection: Sendable, Equatable {
    public var seq: UInt64
    public var readings: Int
    public var code: String
    public var message: String
}

/// Counters of one client, for progress displays and summaries.
public struct ClientStats: Sendable, Equatable {
    public var readingsQueued = 0
    /// Readings cut into batches and sent at least once.
    public var readingsSent = 0
    /// Readings in acked batches (accepted + dead-lettered).
    public var readingsAcked = 0
    public var readingsAccepted = 0
    /// Readings the server put in the dead-letter table.
    public var readingsRejected = 0
    /// Readings in batches rejected whole.
    public var readingsInRejectedBatches = 0
    public var batchesSent = 0
    public var batchesAcked = 0
    public var batchesDuplicate = 0
    public var batchesRejected = 0
    /// Batches sent again after a reconnect.
    public var batchesResent = 0
    /// Sessions opened after the first.
    public var reconnects = 0
    public var connected = false
    /// Times the client had something to send and no credit for it, and the total time spent so.
    public var creditWaits = 0
    public var creditWaitSeconds: Double = 0
    /// `CreditRequest`s sent (the server said it reads them and a batch needed more credit than was held).
    public var creditRequests = 0
    /// Credit given back to the server (`CreditReturn`, answering its `CreditRecall`s), in readings.
    public var creditReturned = 0
    /// True while waiting for credit now.
    public var waitingForCredit = false
    public var creditHeld: UInt64 = 0
    /// Queued (not yet cut) plus unacked readings.
    public var readingsOutstanding = 0
    public var unackedBatches = 0
    public var bufferedBytes = 0
    /// Bytes of batch frames written, resends included, and their readings: wire bytes per reading.
    public var batchWireBytes = 0
    public var batchWireReadings = 0
    /// The last connection problem, for "why is nothing acked" questions.
    public var lastProblem: String?
    /// With a spool: batches and readings in it not yet acknowledged, its bytes on disk, whether `send` waits
    /// for room now, what the drop-oldest policy dropped, and the input position taken up to.
    public var spooled = false
    public var spoolBatches = 0
    public var spoolReadings = 0
    public var spoolBytes = 0
    public var spoolFull = false
    public var spoolDroppedBatches = 0
    public var spoolDroppedReadings = 0
    /// Of `spoolDroppedReadings`, those an earlier run had spooled: it may have sent them, and the server may
    /// hold them (this run cannot know), so they are "dropped or delivered", not surely lost.
    public var spoolDroppedEarlierRunReadings = 0
    /// Spooled batches whose record no longer checked out when read back (the disk changed under it).
    public var spoolUnreadableBatches = 0
    public var spoolInputPosition: UInt64 = 0

    public init() {}
}
