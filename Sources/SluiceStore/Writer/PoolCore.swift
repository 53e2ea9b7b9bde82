import Dispatch

/// One submitted batch on its way to a writer.
struct QueuedBatch: Sendable {
    var batch: WriteBatch
    var readings: Int
    var completion: @Sendable (BatchOutcome) -> Void
    /// An async submit waits for room before entering a writer queue; a callback submit does not.
    var waitsForRoom: Bool
    var writer: Int
}

/// The state shared by `WriterPool`'s callers and its writer threads, behind one lock: the admission
/// FIFO, each writer's FIFO, the reading counters and the statistics. Critical sections are short and never
/// call out; completions and semaphore signals happen after the lock is released.
struct PoolState {
    enum Phase { case created, running, draining, stopped }

    var phase = Phase.created
    /// Set when draining outlived `drainTimeout`: writers fail what they still hold instead of retrying.
    var abandon = false
    /// Submits waiting for room, in order (a later submit never overtakes one waiting here).
    var waiting = FIFO<QueuedBatch>()
    var waitingReadings = 0
    var writerQueues: [FIFO<QueuedBatch>]
    /// Readings in writer queues, not yet taken into a transaction.
    var queuedReadings = 0
    /// Readings admitted into writer queues and not yet completed.
    var admittedReadings = 0
    var latencies = LatencyWindow(size: 1024)
    var committedBatches = 0
    var duplicateBatches = 0
    var failedBatches = 0
    var writerErrors = 0
    /// `writerErrors` by SQLSTATE class (`SQLStateClass.metricLabel`).
    var writerErrorsByClass: [String: Int] = [:]
    var reconnects = 0
    var overCapacitySubmissions = 0
    var writerReachable: [Bool]
    /// Why each writer is holding its group back, while it is (nil once it commits again).
    var writerStalls: [WriterStall?]
    /// Readings PostgreSQL refused for their data and the writers dead-lettered.
    var refusedReadings = 0
    /// Producers with batches not yet completed, the writer they are pinned to and how many batches.
    /// A producer keeps its writer while it has batches in flight (so they commit in order); once it has
    /// none, its next batch may go to whichever writer has the least work, which keeps writers balanced.
    var producerWriters: [ProducerID: (writer: Int, batches: Int)] = [:]
    /// Readings assigned to each writer (waiting, queued or being written) and not yet completed.
    var writerLoad: [Int]
    var runningWriters = 0
    var onAllWritersExited: [@Sendable () -> Void] = []

    init(writers: Int) {
        writerQueues = Array(repeating: FIFO(), count: writers)
        writerReachable = Array(repeating: true, count: writers)
        writerStalls = Array(repeating: nil, count: writers)
        writerLoad = Array(repeating: 0, count: writers)
    }

    /// Pins `producer` to a writer for one more batch of `readings`: its current writer if it has batches in
    /// flight, else the least loaded one.
    mutating func assignWriter(to producer: ProducerID, readings: Int) -> Int {
        let writer: Int
        if let pinned = producerWriters[producer] {
            writer = pinned.writer
            producerWriters[producer] = (writer, pinned.batches + 1)
        } else {
            writer = writerLoad.indices.min { writerLoad[$0] < writerLoad[$1] } ?? 0
            producerWriters[producer] = (writer, 1)
        }
        writerLoad[writer] += readings
        return writer
    }

    /// Releases one completed batch's pin and load.
    mutating func release(_ item: QueuedBatch) {
        writerLoad[item.writer] -= item.readings
        guard let pinned = producerWriters[item.batch.producer] else { return }
        if pinned.batches <= 1 {
            producerWriters[item.batch.producer] = nil
        } else {
            producerWriters[item.batch.producer] = (pinned.writer, pinned.batches - 1)
        }
    }

    /// Moves waiting submits into their writer queues while there is room (or while the head is a callback
    /// submit, which never waits for room), preserving order. Returns the writers to wake up.
    mutating func admitWaiting(capacity: Int) -> Set<Int> {
        var woken = Set<Int>()
        while let head = waiting.first {
            let fits = admittedReadings + head.readings <= capacity || admittedReadings == 0
            guard fits || !head.waitsForRoom else { break }
            _ = waiting.popFirst()
            waitingReadings -= head.readings
            admit(head, capacity: capacity)
            woken.insert(head.writer)
        }
        return woken
    }

    mutating func admit(_ item: QueuedBatch, capacity: Int) {
        if admittedReadings + item.readings > capacity && admittedReadings > 0 { overCapacitySubmissions += 1 }
        writerQueues[item.writer].append(item)
        queuedReadings += item.readings
        admittedReadings += item.readings
    }

    /// Takes the next group for `writer`: the first queued batch, then as many following ones as fit
    /// `maxReadings` in total.
    mutating func takeGroup(writer: Int, maxReadings: Int) -> [QueuedBatch] {
        var group: [QueuedBatch] = []
        var total = 0
        while let next = writerQueues[writer].first, group.isEmpty || total + next.readings <= maxReadings {
            _ = writerQueues[writer].popFirst()
            group.append(next)
            total += next.readings
        }
        queuedReadings -= total
        return group
    }

    var stats: WriterPoolStats {
        WriterPoolStats(
            queuedReadings: queuedReadings + waitingReadings,
            inFlightReadings: admittedReadings + waitingReadings,
            commitLatencyP50Seconds: latencies.quantile(0.5),
            commitLatencyP99Seconds: latencies.quantile(0.99),
            committedBatches: committedBatches, duplicateBatches: duplicateBatches, failedBatches: failedBatches,
            writerErrors: writerErrors, writerErrorsByClass: writerErrorsByClass, reconnects: reconnects,
            databaseReachable: writerReachable.allSatisfy { $0 },
            overCapacitySubmissions: overCapacitySubmissions,
            stall: writerStalls.compactMap { $0 }.min { $0.since < $1.since },
            refusedReadings: refusedReadings)
    }
}

/// Faults tests inject into a real pool against a real PostgreSQL (nothing here is mocked).
struct TestingHooks {
    /// The next this many COMMITs that succeed are reported to the writer as a broken connection, as when
    /// the connection breaks after the server committed and before its answer arrived.
    var loseCommitReplies = 0
}

/// What `WriterPool` and its writer threads share.
final class PoolCore: Sendable {
    let configuration: WriterPool.Configuration
    let state: Locked<PoolState>
    let testing = Locked(TestingHooks())
    /// One per writer; signalled once per event that may give it work (or tell it to exit).
    let wakeUps: [DispatchSemaphore]

    init(configuration: WriterPool.Configuration) {
        self.configuration = configuration
        state = Locked(PoolState(writers: configuration.writers))
        wakeUps = (0..<configuration.writers).map { _ in DispatchSemaphore(value: 0) }
    }

    func wake(_ writers: some Sequence<Int>) {
        for writer in writers { wakeUps[writer].signal() }
    }

    func wakeAll() { wake(0..<wakeUps.count) }

    /// Called by a writer once a group is done: frees its room, admits waiting submits, wakes their writers.
    func groupFinished(_ group: ArraySlice<QueuedBatch>, outcomes: [BatchOutcome], latency: Double?) {
        let woken = state.withLock { state -> Set<Int> in
            for item in group {
                state.admittedReadings -= item.readings
                state.release(item)
            }
            for outcome in outcomes {
                switch outcome {
                case .committed(let refused):
                    state.committedBatches += 1
                    state.refusedReadings += refused.count
                case .duplicate: state.duplicateBatches += 1
                case .failed: state.failedBatches += 1
                }
            }
            if let latency { state.latencies.record(latency) }
            var woken = state.admitWaiting(capacity: configuration.queueCapacityReadings)
            // While draining, a writer with an empty queue is waiting for the admission FIFO to empty.
            if state.phase == .draining { woken.formUnion(0..<wakeUps.count) }
            return woken
        }
        wake(woken)
    }
}
