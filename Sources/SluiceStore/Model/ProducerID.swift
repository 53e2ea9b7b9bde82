/// The stable 16-byte identity of a producer (a client installation), the key batches are deduplicated by.
/// Printed, and stored in PostgreSQL, as a UUID.
public struct ProducerID: Hashable, Sendable, CustomStringConvertible {
    // Two words instead of an array: no allocation and cheap hashing.
    private let high: UInt64
    private let low: UInt64

    /// The identity made of exactly 16 bytes; nil for any other length.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.high = high
        self.low = low
    }

    /// The 16 bytes, most significant first (the UUID's byte order).
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    /// A random version-4 UUID.
    public static func random() -> ProducerID {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        return ProducerID(bytes: bytes)!
    }

    /// Lower-case UUID text, e.g. `3f2504e0-4f89-41d3-9a0c-0305e82c3301` (PostgreSQL's own spelling).
    public var description: String {
        let hex = bytes.map { byte -> String in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
        }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }
            .joined(separator: "-")
    }

    /// Parses UUID text (with or without hyphens, any case); nil if it is not 32 hex digits.
    public init?(uuidString: some StringProtocol) {
        let digits = String(uuidString.filter { $0 != "-" })
        guard digits.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes: bytes)
    }
}
