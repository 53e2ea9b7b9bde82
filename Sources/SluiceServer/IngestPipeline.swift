import Foundation
import Logging
import NIOCore
import SluiceCore
import SluiceProtocol
import SluiceStore

/// What the pipeline made of one frame handed to it.
enum PipelineResult: Sendable {
    /// A batch ready for the writer pool, and the `Ack` to send once it commits.
    case batch(PreparedBatch)
    /// Rejected whole (structure, scope): an `Error` for that seq, the session goes on.
    case rejected(seq: UInt64, readings: Int, WireError)
    /// Undecodable: the connection closes.
    case broken(WireError)
    case ping(nonce: UInt64)
    case pong
    case hello
    case creditRequest(readings: UInt64)
    case creditReturn(readings: UInt64)

    /// The state machine's view of it (the payload stays with the handler).
    var decoded: SessionStateMachine.Decoded {
        switch self {
        case .batch(let b): .batch(seq: b.seq, readings: b.readings)
        case .rejected(let seq, let readings, let error): .rejected(seq: seq, readings: readings, error)
        case .broken(let error): .broken(error)
        case .ping(let nonce): .ping(nonce: nonce)
        case .pong: .pong
        case .hello: .hello
        case .creditRequest(let readings): .creditRequest(readings: readings)
        case .creditReturn(let readings): .creditReturn(readings: readings)
        }
    }
}

/// A validated, enriched batch and its ack-to-be.
struct PreparedBatch: Sendable {
    var seq: UInt64
    /// Credit the batch costs: every reading it holds, accepted or not.
    var readings: Int
    var write: WriteBatch
    var accepted: Int
    var rejected: Int
    var reasons: [Rejection]
    /// Indices (in the client's batch) of the readings validation rejected, ascending.
    var rejectedIndices: [Int] = []

    /// The index in the client's batch of the `row`-th reading of `write` (accepted readings keep their
    /// order, so it is the row-th index validation did not reject).
    static func wireIndex(ofRow row: Int, rejectedIndices: [Int]) -> Int {
        var index = row
        for rejected in rejectedIndices {
            guard rejected <= index else { break }
            index += 1
        }
        return index
    }
}

/// One frame to decode, validate and enrich.
struct PipelineJob: Sendable {
    enum Input: Sendable {
        /// Still encoded, possibly compressed.
        case raw(RawFrame)
        /// Already decoded on the event loop (an uncompressed frame that did not look like a batch).
        case decoded(Batch)
    }

    var input: Input
    var ticket: UInt64
    var producer: ProducerID
    var devicePrefix: String
    var maxDecompressedBytes: Int
    var session: SessionHandle
}

/// Decompress + decode + validate + enrich, off the event loops, in ONE bounded task group: at most
/// `concurrency` frames are worked on at once, whichever connections they come from. Results go back to the
/// session, which re-sequences them into arrival order before they reach the writer pool.
final class IngestPipeline: Sendable {
    private let jobs = PipelineQueue<PipelineJob>()
    private let concurrency: Int
    private let policy: ValidationPolicy
    private let registry: DeviceRegistryCache?

    init(concurrency: Int, policy: ValidationPolicy, registry: DeviceRegistryCache?) {
        self.concurrency = concurrency
        self.policy = policy
        self.registry = registry
    }

    /// Queues a job. Memory is bounded upstream: a connection stops being read once it has
    /// `maxFramesInPipelinePerConnection` frames here, and batches are bounded by credit.
    func submit(_ job: PipelineJob) {
        jobs.submit(job)
    }

    /// Ends the stream; `run` returns once the jobs already queued are done.
    func finish() {
        jobs.finish()
    }

    /// Runs the task group until `finish()`: `concurrency` workers, each taking one job at a time, so at most
    /// that many frames are worked on at once.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { [self] in
                    while let job = await jobs.next() {
                        let result = await process(job)
                        job.session.decoded(ticket: job.ticket, result)
                    }
                }
            }
        }
    }

    func process(_ job: PipelineJob) async -> PipelineResult {
        let batch: Batch
        switch job.input {
        case .decoded(let b):
            batch = b
        case .raw(let frame):
            var payload = frame.payload
            if frame.isCompressed {
                do {
                    payload = try ZstdDecompressor().decompress(payload, cap: job.maxDecompressedBytes)
                } catch {
                    return .broken(error)
                }
            }
            // Bounds before expansion: the batch's shape (series, readings, string lengths) is read off the
            // wire bytes, so a frame of a million empty series or a 32 MiB device id is refused before
            // protobuf materialises it.
            do {
                _ = try BatchShape.scan(payload, limits: policy.shapeLimits)
            } catch {
                if error.error.code == .protocolError { return .broken(error.error) }
                return .rejected(seq: error.seq, readings: error.readings, error.error)
            }
            let message: ClientFrame
            do {
                message = try FramePayload.decodeFrame(
                    ClientFrame.self, from: RawFrame(flags: 0, payload: payload), decompressor: nil,
                    maxDecompressedBytes: job.maxDecompressedBytes)
            } catch {
                return .broken(error)
            }
            switch message.kind {
            case .batch(let b): batch = b
            case .ping(let p): return .ping(nonce: p.nonce)
            case .pong: return .pong
            case .creditRequest(let r): return .creditRequest(readings: r.readings)
            case .creditReturn(let r): return .creditReturn(readings: r.readings)
            case .hello: return .hello
            case nil: return .broken(WireError(.protocolError, "ClientFrame has no message set"))
            }
        }
        let readings = BatchValidator.readingCount(of: batch)
        let validated: ValidatedBatch
        do {
            validated = try BatchValidator.validate(
                batch, policy: policy, nowMicros: Self.nowMicros(), devicePrefix: job.devicePrefix)
        } catch {
            return .rejected(seq: batch.seq, readings: readings, error)
        }
        return .batch(await enrich(validated, readings: readings, producer: job.producer))
    }

    /// Joins accepted readings with the device registry: value = raw × scale + offset, plus site and unit.
    func enrich(_ batch: ValidatedBatch, readings: Int, producer: ProducerID) async -> PreparedBatch {
        let devices = Set(batch.accepted.map(\.deviceID))
        let (info, partial) =
            if let registry, !devices.isEmpty { await registry.resolve(devices) } else { ([String: DeviceInfo](), Set<String>()) }
        let validationRejected = batch.rejected.map(\.index)
        // A calibration can overflow a finite raw value (a huge scale): such a reading is dead-lettered with
        // its raw value, as validation would have done, instead of reaching PostgreSQL as ±infinity.
        var calibrationRejected: [RejectedReading] = []
        var row = 0
        var series: [RowSeries] = []
        series.reserveCapacity(batch.accepted.count)
        for s in batch.accepted {
            let entry = info[s.deviceID]
            var out = s
            if let entry, entry.scale != 1 || entry.offset != 0 {
                var keep: [Int] = []
                var calibrated: [Double] = []
                calibrated.reserveCapacity(s.values.count)
                for i in s.values.indices {
                    let value = s.values[i] * entry.scale + entry.offset
                    if value.isFinite {
                        calibrated.append(value)
                        keep.append(i)
                    } else {
                        calibrationRejected.append(
                            RejectedReading(
                                index: PreparedBatch.wireIndex(ofRow: row + i, rejectedIndices: validationRejected),
                                deviceID: s.deviceID, metric: s.metric, timeMicros: s.times[i], value: s.values[i],
                                quality: s.quality.isEmpty ? 0 : s.quality[i], code: .valueNotFinite,
                                message: "calibrated value \(s.values[i]) × \(entry.scale) + \(entry.offset) is not finite"))
                    }
                }
                if keep.count != s.values.count {
                    out.times = keep.map { s.times[$0] }
                    out.quality = s.quality.isEmpty ? [] : keep.map { s.quality[$0] }
                }
                out.values = calibrated
            }
            row += s.count
            if out.count > 0 {
                series.append(
                    RowSeries(
                        deviceID: out.deviceID, metric: out.metric, times: out.times, values: out.values,
                        quality: out.quality, site: entry?.site, unit: entry?.unit,
                        enrichmentPartial: partial.contains(s.deviceID)))
            }
        }
        var rejected = batch.rejected
        if !calibrationRejected.isEmpty {
            rejected = (rejected + calibrationRejected).sorted { $0.index < $1.index }
        }
        let settled = ValidatedBatch(seq: batch.seq, accepted: [], rejected: rejected)
        let deadLetters = rejected.map { r in
            DeadLetter(
                deviceID: r.deviceID, metric: r.metric, timeMicros: r.timeMicros, value: r.value, quality: r.quality,
                reasonCode: Int32(r.code.rawValue), reason: r.message)
        }
        return PreparedBatch(
            seq: batch.seq, readings: readings,
            write: WriteBatch(producer: producer, seq: batch.seq, series: series, deadLetters: deadLetters),
            accepted: batch.acceptedCount - calibrationRejected.count, rejected: rejected.count,
            reasons: settled.firstReasons, rejectedIndices: rejected.map(\.index))
    }

    static func nowMicros() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
    }
}
