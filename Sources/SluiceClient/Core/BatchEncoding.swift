import NIOCore
import SluiceProtocol

/// Builds wire batches from queued chunks.
public enum BatchEncoding {
    /// One `Batch`: chunks of the same device and metric are merged into one series (in order), so a batch
    /// holds each series once and its deltas stay small.
    public static func batch(seq: UInt64, chunks: [SeriesChunk]) -> Batch {
        var index: [String: Int] = [:]
        var builders: [SeriesBuilder] = []
        for chunk in chunks {
            let key = chunk.deviceID + "\u{0}" + chunk.metric
            let i: Int
            if let existing = index[key] {
                i = existing
            } else {
                i = builders.count
                index[key] = i
                builders.append(SeriesBuilder(deviceID: chunk.deviceID, metric: chunk.metric, reservingCapacity: chunk.count))
            }
            for r in 0..<chunk.count {
                builders[i].append(
                    timeMicros: chunk.times[r], value: chunk.values[r], quality: chunk.quality.isEmpty ? 0 : chunk.quality[r])
            }
        }
        var batch = Batch()
        batch.seq = seq
        batch.series = builders.map { $0.build() }
        return batch
    }

    /// The whole frame (prefix and payload) for `batch`, zstd-compressed when that makes it smaller.
    public static func frame(_ batch: Batch, compressor: ZstdCompressor?) throws(WireError) -> ByteBuffer {
        var out = ByteBuffer()
        try FramePayload.encode(ClientFrame(.batch(batch)), into: &out, compressor: compressor, compressAbove: 64)
        return out
    }

    /// The readings of an encoded batch frame in wire order (the order `Rejection.index` counts in).
    public static func readings(ofFrame frame: ByteBuffer) -> [Reading] {
        var buffer = frame
        guard let flags = buffer.readInteger(as: UInt8.self), buffer.readInteger(as: UInt32.self) != nil else { return [] }
        let raw = RawFrame(flags: flags, payload: buffer)
        guard
            let message = try? FramePayload.decodeFrame(
                ClientFrame.self, from: raw, decompressor: nil, maxDecompressedBytes: 1 << 30),
            case .batch(let batch) = message.kind
        else { return [] }
        var out: [Reading] = []
        for (i, series) in batch.series.enumerated() {
            guard let expanded = try? series.expand(index: i) else { continue }
            for r in 0..<expanded.count {
                out.append(
                    Reading(
                        deviceID: expanded.deviceID, metric: expanded.metric, timeMicros: expanded.times[r],
                        value: expanded.values[r], quality: expanded.quality.isEmpty ? 0 : expanded.quality[r]))
            }
        }
        return out
    }
}
