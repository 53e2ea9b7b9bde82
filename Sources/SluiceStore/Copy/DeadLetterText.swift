/// Text fields of a dead letter as stored: a dead letter records bad input, which may be huge or hold
/// characters PostgreSQL cannot store, and it must be stored anyway or the reading would be lost.
enum DeadLetterText {
    /// Longest device id or metric stored as received (the validator's limit).
    static let maxIdentifierBytes = 64
    /// Longest reason stored; PostgreSQL's messages quote the failing row, which can be long.
    static let maxReasonBytes = 2_000

    /// `text` if it is at most 64 bytes, else a short prefix, its length and a hash, e.g.
    /// `sensor-aaaaaaaaaaaaaaaa…[70000 B fnv1a64 9f3c2a1b00e4d7c2]` (at most 64 bytes): enough to find and
    /// tell apart what a client sent without storing (or building a COPY row of) megabytes of it.
    static func identifier(_ text: String) -> String {
        let utf8 = text.utf8
        guard utf8.count > maxIdentifierBytes else { return withoutNUL(text) }
        let suffix = "…[\(utf8.count) B fnv1a64 \(hexHash(utf8))]"
        return withoutNUL(prefix(of: text, bytes: maxIdentifierBytes - suffix.utf8.count)) + suffix
    }

    /// The reason, NUL-free and cut to `maxReasonBytes` (on a character boundary).
    static func reason(_ text: String) -> String {
        guard text.utf8.count > maxReasonBytes else { return withoutNUL(text) }
        return withoutNUL(prefix(of: text, bytes: maxReasonBytes - 3)) + "…"
    }

    /// A form of `text` only digits, letters and the hash make up: what is stored when `dead_letters` refused
    /// the row as it was (an operator's constraint on it, say).
    static func minimal(_ text: String) -> String {
        "h:\(text.utf8.count):\(hexHash(text.utf8))"
    }

    /// NUL characters (which PostgreSQL text cannot hold) become U+FFFD.
    static func withoutNUL(_ text: String) -> String {
        guard text.utf8.contains(0) else { return text }
        return String(text.map { $0 == "\0" ? "\u{FFFD}" : $0 })
    }

    /// The longest prefix of whole characters of at most `bytes` UTF-8 bytes.
    static func prefix(of text: String, bytes: Int) -> String {
        var used = 0
        var end = text.startIndex
        for index in text.indices {
            let size = text[index].utf8.count
            guard used + size <= bytes else { break }
            used += size
            end = text.index(after: index)
        }
        return String(text[..<end])
    }

    /// FNV-1a, 64 bits, as 16 hex digits: stable across runs and platforms (Hasher is seeded per process).
    static func hexHash(_ bytes: String.UTF8View) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
