/// Readings handed to `send` but not yet cut into a batch, oldest first.
///
/// Seqs are assigned only when a batch is cut, and a batch is cut only to fit the credit held, so a batch
/// never has to be split after its seq is fixed (splitting then could duplicate readings the server already
/// committed under the old seq).
public struct PendingReadings<Stamp: Sendable>: Sendable {
    private var chunks: [(chunk: SeriesChunk, stamp: Stamp)] = []
    private var head = 0
    /// Readings of `chunks[head]` already taken.
    private var offset = 0

    public private(set) var count = 0
    public private(set) var estimatedBytes = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// The stamp (e.g. enqueue time) of the oldest reading still queued.
    public var oldestStamp: Stamp? { head < chunks.count ? chunks[head].stamp : nil }

    public mutating func append(_ chunk: SeriesChunk, stamp: Stamp) {
        guard chunk.count > 0 else { return }
        chunks.append((chunk, stamp))
        count += chunk.count
        estimatedBytes += chunk.estimatedBytes
    }

    /// Removes the oldest `n` readings (or all, if fewer), splitting a chunk if needed. Returns them with the
    /// stamp of the oldest.
    public mutating func take(_ n: Int) -> (chunks: [SeriesChunk], oldest: Stamp?) {
        var remaining = min(n, count)
        var out: [SeriesChunk] = []
        let oldest = oldestStamp
        while remaining > 0 {
            let (chunk, _) = chunks[head]
            let available = chunk.count - offset
            let taken = min(available, remaining)
            if offset == 0 && taken == chunk.count {
                out.append(chunk)
            } else {
                out.append(chunk.slice(offset..<offset + taken))
            }
            remaining -= taken
            count -= taken
            if taken == available {
                estimatedBytes -= chunk.estimatedBytes
                chunks[head].chunk = SeriesChunk(deviceID: "", metric: "")  // free the columns now
                head += 1
                offset = 0
            } else {
                offset += taken
            }
        }
        if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        if count == 0 { estimatedBytes = 0 }
        return (out, oldest)
    }
}
