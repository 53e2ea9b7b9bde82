import NIOCore

/// Bounds on a batch's shape, checked on the protobuf wire bytes before anything is materialised
/// (DESIGN §3: "sizes are checked before any per-reading work").
public struct BatchShapeLimits: Sendable, Equatable {
    /// Most readings one batch may hold (`Welcome.max_batch_readings`).
    public var maxReadings: Int
    /// Most series one batch may hold. Every series must hold at least one reading, so this never exceeds
    /// `maxReadings`; it also bounds the per-series overhead (strings, arrays) a batch can cost.
    public var maxSeries: Int
    /// Longest device id and metric, in bytes (DESIGN §3: 1–64 bytes). Longer ones do not fail the scan:
    /// the validator dead-letters their readings under a short description.
    public var maxStringBytes: Int

    public init(maxReadings: Int = 65_536, maxSeries: Int = 8_192, maxStringBytes: Int = 64) {
        self.maxReadings = maxReadings
        self.maxSeries = maxSeries
        self.maxStringBytes = maxStringBytes
    }
}

/// What a `ClientFrame` payload holds, learnt by walking its protobuf tags without decoding it.
public enum FrameShape: Sendable, Equatable {
    /// A batch: its seq, readings (the length of every time column, summed) and series count.
    case batch(seq: UInt64, readings: Int, series: Int)
    /// Anything else (Hello, Ping, Pong, unknown); decode it normally.
    case other
}

/// A batch whose shape broke a bound: the whole batch is `INVALID_ARGUMENT` (its seq and the readings it
/// claimed, as far as the scan got, travel with the error so credit can be accounted).
public struct BatchShapeError: Error, Sendable, Equatable {
    public var seq: UInt64
    public var readings: Int
    public var error: WireError
}

/// A short, bounded description of a string that may be huge or hostile: its length, its first 16 bytes
/// (non-printable ones escaped) and its FNV-1a 64-bit hash, enough for an operator to tell two such ids
/// apart without the server ever copying the whole string into a message, a log line or a dead letter.
public func describeOversized(_ bytes: UnsafeRawBufferPointer) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        hash ^= UInt64(b)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    let prefix = bytes.prefix(16).map { b -> String in
        (0x20...0x7e).contains(b) && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\")
            ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16).leftPadded(to: 2)
    }.joined()
    return "\"\(prefix)…\" (\(bytes.count) bytes, fnv1a \(String(hash, radix: 16).leftPadded(to: 16)))"
}

public enum BatchShape {
    /// Walks the `ClientFrame` in `payload` (already decompressed) and, if it is a batch, checks its
    /// shape: at least one series, at most `maxSeries`; every series with at least one reading; at most
    /// `maxReadings` in all. O(bytes), no
    /// allocation proportional to what the batch would expand to.
    ///
    /// Bytes the scan cannot walk (truncated fields, groups, bad tags) are a `PROTOCOL_ERROR`
    /// `BatchShapeError`: the connection closes, as it would for undecodable protobuf.
    public static func scan(_ payload: ByteBuffer, limits: BatchShapeLimits) throws(BatchShapeError) -> FrameShape {
        try payload.withUnsafeReadableBytes { (raw) throws(BatchShapeError) -> FrameShape in
            var reader = WireReader(raw)
            let malformed = BatchShapeError(
                seq: 0, readings: 0,
                error: WireError(
                    .protocolError,
                    "payload of \(raw.count) bytes is not a valid \(ClientFrame.protoMessageName) protobuf message (a truncated field, a group or a bad tag)"))
            // Protobuf merges every occurrence of the batch field into one message (their series concatenate),
            // so all of them are scanned together.
            var batchRanges: [Range<Int>] = []
            while !reader.atEnd {
                // Anything the scan cannot walk is refused here: if it were left to the decoder, an encoding the
                // decoder tolerates (unknown groups) would carry a batch past these bounds.
                guard let (field, wire) = reader.tag() else { throw malformed }
                if field == 2 && wire == 2 {
                    guard let range = reader.lengthDelimited(), batchRanges.count < 64 else { throw malformed }
                    batchRanges.append(range)
                } else if !reader.skip(wire) {
                    throw malformed
                }
            }
            guard !batchRanges.isEmpty else { return .other }
            return try scanBatch(batchRanges.map { UnsafeRawBufferPointer(rebasing: raw[$0]) }, limits: limits)
        }
    }

    /// Checks the shape of an encoded `Batch` message, given as the parts protobuf merges into one.
    public static func scanBatch(_ parts: [UnsafeRawBufferPointer], limits: BatchShapeLimits) throws(BatchShapeError)
        -> FrameShape
    {
        let malformed = BatchShapeError(
            seq: 0, readings: 0, error: WireError(.protocolError, "batch is not a valid \(Batch.protoMessageName) protobuf message (a truncated field, a group or a bad tag)"))
        // First pass: seq (so every error can name it). Cheap: varints and lengths only.
        var seq: UInt64 = 0
        for raw in parts {
            var reader = WireReader(raw)
            while !reader.atEnd {
                guard let (field, wire) = reader.tag() else { throw malformed }
                if field == 1 && wire == 0 {
                    guard let v = reader.varint() else { throw malformed }
                    seq = v
                } else if !reader.skip(wire) {
                    throw malformed
                }
            }
        }
        var readings = 0
        var series = 0
        func fail(_ message: String) -> BatchShapeError {
            BatchShapeError(seq: seq, readings: readings, error: WireError(.invalidArgument, "batch \(seq): \(message)"))
        }
        for raw in parts {
            var reader = WireReader(raw)
            while !reader.atEnd {
                guard let (field, wire) = reader.tag() else { throw malformed }
                guard field == 2 && wire == 2 else {
                    if !reader.skip(wire) { throw malformed }
                    continue
                }
                guard let range = reader.lengthDelimited() else { throw malformed }
                if series == limits.maxSeries {
                    throw fail("holds more than \(limits.maxSeries) series (the limit per batch): merge readings of one device and metric into one series, or split the batch")
                }
                let index = series
                series += 1
                var count = 0
                let body = UnsafeRawBufferPointer(rebasing: raw[range])
                var s = WireReader(body)
                while !s.atEnd {
                    guard let (f, w) = s.tag() else { throw malformed }
                    switch (f, w) {
                    case (1, 2), (2, 2):
                        // A device id or metric over the limit is not a shape error: its readings are
                        // dead-lettered (DESIGN §3) under a short description (see `describeOversized`), and
                        // the string itself is bounded by the frame size, once per series.
                        guard s.lengthDelimited() != nil else { throw malformed }
                    case (4, 2):
                        guard let r = s.lengthDelimited() else { throw malformed }
                        // Packed varints: one reading per byte without the continuation bit.
                        var n = 0
                        for b in UnsafeRawBufferPointer(rebasing: body[r]) where b & 0x80 == 0 { n += 1 }
                        count += n
                    case (4, 0):
                        guard s.varint() != nil else { throw malformed }
                        count += 1
                    default:
                        if !s.skip(w) { throw malformed }
                    }
                }
                if count == 0 {
                    throw fail("series \(index) holds no readings: leave empty series out")
                }
                readings += count
                if readings > limits.maxReadings {
                    throw fail("holds more than \(limits.maxReadings) readings, above max_batch_readings from Welcome: split it")
                }
            }
        }
        if series == 0 {
            throw fail("holds no series and no readings: a batch must carry at least one reading")
        }
        return .batch(seq: seq, readings: readings, series: series)
    }
}

/// A cursor over protobuf wire bytes. Returns nil on anything malformed.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { position >= bytes.count }

    mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while position < bytes.count && shift < 64 {
            let b = bytes[position]
            position += 1
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    mutating func tag() -> (field: UInt64, wire: UInt64)? {
        guard let t = varint(), t >> 3 != 0 else { return nil }
        return (t >> 3, t & 7)
    }

    /// The byte range of a length-delimited field's contents, relative to `bytes`.
    mutating func lengthDelimited() -> Range<Int>? {
        guard let n = varint(), n <= UInt64(bytes.count - position) else { return nil }
        let start = position
        position += Int(n)
        return start..<position
    }

    mutating func skip(_ wire: UInt64) -> Bool {
        switch wire {
        case 0: return varint() != nil
        case 1: guard bytes.count - position >= 8 else { return false }; position += 8; return true
        case 2: return lengthDelimited() != nil
        case 5: guard bytes.count - position >= 4 else { return false }; position += 4; return true
        default: return false
        }
    }
}
