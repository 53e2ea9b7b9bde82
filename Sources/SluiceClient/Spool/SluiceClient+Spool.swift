import NIOCore
import NIOPosix
import SluiceProtocol

/// The spool's side of the client: `send` cuts batches (fixing their seqs), appends them to the spool and
/// only then returns; batches move from disk into the retransmit buffer as it has room, are sent by `pump`
/// like resends, and are released from the spool once acknowledged (or rejected whole).
///
/// Every spool call does blocking file I/O (write, fsync, pread, unlink), so each one runs on NIO's thread
/// pool, never on the actor's cooperative thread; the actor keeps the order (one append, one load, one
/// release at a time) so records are written, read and sent in seq order.
extension SluiceClient {
    func spoolSend(_ chunks: [SeriesChunk], enqueuedAt: ContinuousClock.Instant, inputPosition: UInt64?) async throws {
        guard let spool else { return }
        try checkUsable()
        while spoolWindow.appending {
            await withCheckedContinuation { spoolWindow.appendWaiters.append($0) }
        }
        spoolWindow.appending = true
        defer {
            spoolWindow.appending = false
            if !spoolWindow.appendWaiters.isEmpty { spoolWindow.appendWaiters.removeFirst().resume() }
        }
        while isFull {
            try checkUsable()
            if spool.configuration.whenFull == .dropOldest, try await dropOldestSegment() { continue }
            spoolWindow.waitingForRoom = true
            defer { spoolWindow.waitingForRoom = false }
            try await withCheckedThrowingContinuation { spaceWaiters.append($0) }
        }
        try checkUsable()
        let batches = try await cutForSpool(chunks)
        let position = inputPosition ?? stats.spoolInputPosition
        let entries: [SpoolEntry]
        do {
            entries = try await NIOThreadPool.singleton.runIfActive {
                try spool.append(batches.map { Spool.Batch(seq: $0.seq, readings: $0.readings, frame: Array($0.frame.readableBytesView)) }, inputPosition: position)
            }
        } catch let error as ClientError {
            fail(error)
            throw error
        }
        stats.spoolInputPosition = position
        for (entry, batch) in zip(entries, batches) {
            stats.readingsQueued += entry.readings
            spoolWindow.liveBatches += 1
            spoolWindow.liveReadings += entry.readings
            if spoolWindow.backlogIsEmpty && !spoolWindow.loading && !buffer.isFull {
                buffer.append(
                    seq: entry.seq, readings: entry.readings, bytes: batch.frame.readableBytes,
                    payload: Unacked(frame: batch.frame, enqueuedAt: enqueuedAt, firstSentAt: nil))
            } else {
                spoolWindow.push(entry)
            }
        }
        pump()
        loadFromSpool()
    }

    /// Cuts the readings into batches of at most `maxBatchReadings`, each with its seq, encoded as it will go
    /// on the wire. The frame limit is the protocol's default (no session may be open now); a batch over it is
    /// halved before its seq is used.
    private func cutForSpool(_ chunks: [SeriesChunk]) async throws -> [(seq: UInt64, readings: Int, frame: ByteBuffer)] {
        var queue = PendingReadings<Int>()
        for chunk in chunks { queue.append(chunk, stamp: 0) }
        var parts: [[SeriesChunk]] = []
        while !queue.isEmpty { parts.append(queue.take(max(1, configuration.maxBatchReadings)).chunks) }
        let maxFrameBytes = FrameLimits.defaultNegotiated.maxFrameBytes
        var out: [(seq: UInt64, readings: Int, frame: ByteBuffer)] = []
        while let part = parts.first {
            parts.removeFirst()
            let readings = part.reduce(0) { $0 + $1.count }
            guard readings > 0 else { continue }
            try await ensureSeqReserved()
            let seq = seqs.next
            let frame: ByteBuffer
            do {
                frame = try BatchEncoding.frame(BatchEncoding.batch(seq: seq, chunks: part), compressor: compressor)
            } catch {
                throw ClientError.invalidInput("cannot encode batch \(seq): \(error)")
            }
            if frame.readableBytes - RawFrame.prefixBytes > maxFrameBytes {
                guard readings > 1 else {
                    throw ClientError.invalidInput("one reading encodes to \(frame.readableBytes) bytes, above the frame limit of \(maxFrameBytes)")
                }
                let (left, right) = halve(part, readings: readings)
                parts.insert(contentsOf: [left, right], at: 0)
                continue
            }
            _ = seqs.allocate()
            out.append((seq, readings, frame))
        }
        return out
    }

    /// Before a seq past the reservation in `producer.json` is used, the reservation is extended (and fsynced):
    /// a restart then starts past every seq this run may have spooled.
    private func ensureSeqReserved() async throws {
        guard !seqs.canAllocate, let path = stateFilePath else { return }
        let state = ProducerState(producer: producer, nextSeq: seqs.nextReservation)
        do {
            try await NIOThreadPool.singleton.runIfActive { try ProducerStateFile.write(state, to: path) }
        } catch let error as ClientError {
            fail(error)
            throw error
        }
        seqs.reserved(upTo: state.nextSeq)
    }

    /// Moves the oldest batches waiting on disk into the retransmit buffer, as far as it has room.
    func loadFromSpool() {
        guard let spool, !spoolWindow.loading, !spoolWindow.backlogIsEmpty, !buffer.isFull, !closed else { return }
        let entries = spoolWindow.takeFront(fitting: buffer.capacityBytes - buffer.bytes)
        spoolWindow.loading = true
        Task {
            let frames = (try? await NIOThreadPool.singleton.runIfActive { entries.map { spool.read($0) } })
                ?? entries.map { _ in nil }
            self.spoolLoaded(entries, frames)
        }
    }

    private func spoolLoaded(_ entries: [SpoolEntry], _ frames: [[UInt8]?]) {
        spoolWindow.loading = false
        let now = ContinuousClock.now
        for (entry, frame) in zip(entries, frames) {
            guard let frame else {
                // Its record no longer checks out: it cannot be sent, and saying so is all that is left.
                stats.spoolUnreadableBatches += 1
                stats.lastProblem = "spooled batch \(entry.seq) (\(entry.readings) readings) no longer reads back intact"
                logger.error("sluice: \(stats.lastProblem!)")
                spoolWindow.liveBatches -= 1
                spoolWindow.liveReadings -= entry.readings
                release([entry.seq])
                continue
            }
            buffer.append(
                seq: entry.seq, readings: entry.readings, bytes: frame.count,
                payload: Unacked(frame: ByteBuffer(bytes: frame), enqueuedAt: now, firstSentAt: nil, recovered: entry.seq < spoolRecoveredBelow))
        }
        pump()
        loadFromSpool()
        wakeWaiters()
    }

    /// A spooled batch was acknowledged or rejected whole: it leaves the spool.
    func spoolAcknowledged(_ entry: RetransmitBuffer<Unacked>.Entry) {
        guard spool != nil else { return }
        spoolWindow.liveBatches -= 1
        spoolWindow.liveReadings -= entry.readings
        release([entry.seq])
        loadFromSpool()
    }

    private func release(_ seqs: [UInt64]) {
        guard let spool else { return }
        spoolWindow.toRelease += seqs
        guard !spoolWindow.releasing else { return }
        spoolWindow.releasing = true
        let batch = spoolWindow.toRelease
        spoolWindow.toRelease.removeAll()
        Task {
            _ = try? await NIOThreadPool.singleton.runIfActive { spool.release(batch) }
            self.released()
        }
    }

    private func released() {
        spoolWindow.releasing = false
        if !spoolWindow.toRelease.isEmpty { release([]) }
        wakeWaiters()
    }

    /// Drop-oldest: gives up the oldest segment's batches (counted) so new readings fit. Returns false when
    /// there was nothing to drop (the space is held by the append in progress), so the caller waits instead.
    ///
    /// Only a batch that never went on the wire is dropped: one already sent may be committed (its ack still
    /// to come, or lost with a connection), so counting it as dropped could be a lie. Such a batch leaves the
    /// disk with the segment but stays in memory (the retransmit buffer bounds that) until its ack settles it.
    /// A batch an earlier run spooled may have been sent by that run, so its drop is counted apart as
    /// possibly delivered.
    private func dropOldestSegment() async throws -> Bool {
        guard let spool else { return false }
        let seqs = try await NIOThreadPool.singleton.runIfActive { spool.oldestSegmentSeqs() }
        guard !seqs.isEmpty else { return false }
        var droppedSeqs: [UInt64] = []
        var readings = 0
        var earlierRunReadings = 0
        var keptInFlight = 0
        for seq in seqs {
            if let entry = buffer.entry(seq: seq) {
                if entry.payload.firstSentAt != nil {
                    keptInFlight += 1
                    continue
                }
                buffer.remove(seq: seq)
                droppedSeqs.append(seq)
                readings += entry.readings
                if entry.payload.recovered { earlierRunReadings += entry.readings }
            }
        }
        for entry in spoolWindow.remove(Set(seqs)) {
            droppedSeqs.append(entry.seq)
            readings += entry.readings
            if entry.seq < spoolRecoveredBelow { earlierRunReadings += entry.readings }
        }
        spoolWindow.liveBatches -= droppedSeqs.count
        spoolWindow.liveReadings -= readings
        stats.spoolDroppedBatches += droppedSeqs.count
        stats.spoolDroppedReadings += readings
        stats.spoolDroppedEarlierRunReadings += earlierRunReadings
        logger.warning("""
            sluice: spool full: dropped its oldest \(droppedSeqs.count) batches (\(readings) readings), never sent\
            \(earlierRunReadings > 0 ? " by this run (\(earlierRunReadings) of those readings were spooled by an earlier run, which may have delivered them)" : ""); \
            \(keptInFlight) batches already sent left the disk and wait in memory for their acks
            """)
        _ = try await NIOThreadPool.singleton.runIfActive { spool.release(seqs) }
        return true
    }

    /// Starts the fsync timer of the `interval` policy.
    func spoolStarted() {
        guard let spool else { return }
        loadFromSpool()
        if case .interval(let interval) = spool.configuration.fsync {
            spoolWindow.syncTask = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard let self else { return }
                    do {
                        try await NIOThreadPool.singleton.runIfActive { try spool.sync() }
                    } catch let error as ClientError {
                        await self.fail(error)
                        return
                    } catch {
                        return
                    }
                }
            }
        }
    }

    /// Closing: stop the timer and fsync what it had not yet (what is unacknowledged stays in the spool).
    func spoolClosing() async {
        guard let spool else { return }
        spoolWindow.syncTask?.cancel()
        spoolWindow.syncTask = nil
        _ = try? await NIOThreadPool.singleton.runIfActive { try spool.sync() }
    }
}
