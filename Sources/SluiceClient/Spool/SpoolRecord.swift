/// One batch as a spool segment holds it: a fixed header, then the batch's frame exactly as it goes on the
/// wire (length prefix, zstd and all), so a resend after a restart is byte for byte what the first run cut.
///
/// ```
/// magic "SLSP" | payload length u32 | seq u64 | readings u32 | flags u32 | input position u64 | crc32 u32 | payload
/// ```
/// Little-endian. The CRC covers everything after the magic except itself, plus the payload, so a torn write
/// (a header without its payload, a payload cut short, zeros a crash left in the page) never parses as a batch.
/// The seq is fixed here, when the batch is spooled: a resend after a crash carries the same seq, and the
/// server's dedup makes it exactly once.
public struct SpoolRecord: Sendable, Equatable {
    public static let magic: [UInt8] = Array("SLSP".utf8)
    public static let headerBytes = 36
    /// No batch frame comes near this (the wire allows 4 MiB): a larger length is corruption, not a batch.
    public static let maxPayloadBytes = 64 << 20

    /// Set on the last record of one `append`: the records of an append are taken together or not at all,
    /// and only the last one's `inputPosition` says how far the input was taken.
    public static let flagGroupEnd: UInt32 = 1

    public var seq: UInt64
    public var readings: Int
    public var flags: UInt32
    /// The caller's input position after this append (lines taken, for `sluice send`); meaningful on a group end.
    public var inputPosition: UInt64
    public var payload: [UInt8]

    public init(seq: UInt64, readings: Int, flags: UInt32, inputPosition: UInt64, payload: [UInt8]) {
        self.seq = seq
        self.readings = readings
        self.flags = flags
        self.inputPosition = inputPosition
        self.payload = payload
    }

    public var isGroupEnd: Bool { flags & Self.flagGroupEnd != 0 }
    public var encodedBytes: Int { Self.headerBytes + payload.count }

    public func encode(into out: inout [UInt8]) {
        let start = out.count
        out += Self.magic
        out.appendLE(UInt32(payload.count))
        out.appendLE(seq)
        out.appendLE(UInt32(readings))
        out.appendLE(flags)
        out.appendLE(inputPosition)
        var crc = CRC32()
        crc.update(out[(start + 4)...])
        crc.update(payload[...])
        out.appendLE(crc.value)
        out += payload
    }

    /// What `decode` found at an offset.
    public enum Decoded: Equatable {
        case record(SpoolRecord, next: Int)
        /// Fewer bytes than the header or the payload length needs: a write cut short by a crash, if at the end.
        case truncated
        /// The bytes are there but are not a record (bad magic, impossible length, checksum mismatch).
        case invalid(String)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) -> Decoded {
        guard bytes.count - offset >= headerBytes else { return .truncated }
        guard bytes[offset..<offset + 4].elementsEqual(magic) else { return .invalid("no record marker") }
        let length = Int(bytes.readLE(UInt32.self, at: offset + 4))
        guard length <= maxPayloadBytes else { return .invalid("impossible payload length \(length)") }
        guard bytes.count - offset - headerBytes >= length else { return .truncated }
        let stored = bytes.readLE(UInt32.self, at: offset + 32)
        var crc = CRC32()
        crc.update(bytes[(offset + 4)..<(offset + 32)])
        let payloadStart = offset + headerBytes
        crc.update(bytes[payloadStart..<payloadStart + length])
        guard crc.value == stored else { return .invalid("checksum mismatch") }
        let record = SpoolRecord(
            seq: bytes.readLE(UInt64.self, at: offset + 8), readings: Int(bytes.readLE(UInt32.self, at: offset + 16)),
            flags: bytes.readLE(UInt32.self, at: offset + 20), inputPosition: bytes.readLE(UInt64.self, at: offset + 24),
            payload: Array(bytes[payloadStart..<payloadStart + length]))
        return .record(record, next: payloadStart + length)
    }
}

/// CRC-32 (IEEE 802.3, zlib's): enough to tell a torn or bit-rotted record from a good one; the spool is not
/// defending against an adversary who can write its files.
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
    private var crc: UInt32 = 0xFFFF_FFFF

    mutating func update(_ bytes: ArraySlice<UInt8>) {
        Self.table.withUnsafeBufferPointer { table in
            for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        }
    }

    var value: UInt32 { crc ^ 0xFFFF_FFFF }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { append(contentsOf: $0) }
    }

    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }
}
