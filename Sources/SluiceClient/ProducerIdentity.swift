/// The 16-byte identity the server deduplicates a producer's batches by (with their seq).
///
/// Keep it stable across restarts (see `ProducerStateFile`) so a resent batch is recognised as a duplicate.
public struct ProducerIdentity: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// nil unless exactly 16 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Parses UUID text (`8-4-4-4-12` hex digits, dashes optional).
    public init?(uuidString: String) {
        let hex = uuidString.filter { $0 != "-" }
        guard hex.count == 32 else { return nil }
        var out = [UInt8]()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            out.append(byte)
            index = next
        }
        self.bytes = out
    }

    /// A random version-4 UUID.
    public static func random() -> ProducerIdentity {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0f) | 0x40
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        return ProducerIdentity(bytes: bytes)!
    }

    /// UUID text, lower case.
    public var description: String {
        let hex = bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }
        return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
    }
}
