/// A durable spool for a producer: batches are written to segment files in a directory before `send`
/// returns, and leave them only once acknowledged, so a crash, a kill or a power cut loses nothing that
/// `send` accepted (per the fsync policy), and a restarted producer resends what the spool holds first.
public struct SpoolConfiguration: Sendable, Equatable {
    /// The spool's directory (created if absent). One process at a time: a second one fails, naming the first.
    public var directory: String
    /// Segment files may take up to this many bytes (plus one append); then `whenFull` applies.
    public var maxBytes: Int
    public var fsync: SpoolFsync
    public var whenFull: SpoolFullPolicy

    public init(directory: String, maxBytes: Int = 1 << 30, fsync: SpoolFsync = .always, whenFull: SpoolFullPolicy = .block) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.fsync = fsync
        self.whenFull = whenFull
    }

    /// Small enough that acknowledged space comes back soon (a segment is deleted once every batch in it is
    /// acknowledged) and a drop-oldest drops little; large enough that rotation is rare.
    var segmentBytes: Int { min(max(maxBytes / 16, 16 << 10), 16 << 20) }
}

/// When spooled batches reach the disk, not only the page cache.
public enum SpoolFsync: Sendable, Equatable {
    /// fsync before `send` returns: a power cut loses nothing `send` accepted. The default: one fsync per
    /// append (a batch of up to `maxBatchReadings`), not per reading.
    case always
    /// fsync at most this long after an append: a power cut can lose that much (a process crash or kill
    /// loses nothing, since the page cache survives it).
    case interval(Duration)
    /// Leave it to the operating system: survives crashes and kills of the process, not power cuts.
    case never
}

/// What `send` does when the spool holds `maxBytes`.
public enum SpoolFullPolicy: Sendable, Equatable {
    /// Wait until acknowledgements free space: the caller stops reading its input (a pipe then fills and its
    /// writer blocks). Nothing is dropped.
    case block
    /// Drop the oldest segment's unacknowledged batches to make room, and count them
    /// (`ClientStats.spoolDroppedReadings`). For gateways where the newest readings matter most.
    case dropOldest
}
