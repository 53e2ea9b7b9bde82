/// The stable 16-byte identity of a producer (a client installation), the key batches are deduplicated by.
/// Printed, and stored in PostgreSQL, as a UUID.
public struct ProducerID: Hashable, Comparable, Sendable, CustomStringConvertible {
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
        // Built in one fixed-size pass: writers format every producer of every group.
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { text in
            var position = 0
            for index in 0..<16 {
                if index == 4 || index == 6 || index == 8 || index == 10 {
                    text[position] = UInt8(ascii: "-")
                    position += 1
                }
                let byte = UInt8(truncatingIfNeeded: (index < 8 ? high : low) >> (56 - 8 * (index % 8)))
                text[position] = digits.utf8Start[Int(byte >> 4)]
                text[position + 1] = digits.utf8Start[Int(byte & 0x0F)]
                position += 2
            }
            return position
        }
    }

    /// The UUID byte order, which is also PostgreSQL's order of uuid values.
    public static func < (lhs: ProducerID, rhs: ProducerID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
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
