import SluiceProtocol

/// One bearer token as stored: never the token itself, only its SHA-256.
public struct TokenEntry: Sendable, Equatable {
    /// Short public handle used by `sluiced token list|revoke` (the first 8 hex digits of the hash).
    public var id: String
    /// SHA-256 of the token, 64 lower-case hex digits.
    public var hashHex: String
    /// Device ids this token may write must start with this; empty = every device.
    public var devicePrefix: String
    /// Unix seconds.
    public var createdAt: Int64
    /// Free text for operators ("gateway 3, hall B").
    public var name: String

    public init(id: String, hashHex: String, devicePrefix: String, createdAt: Int64, name: String) {
        self.id = id
        self.hashHex = hashHex
        self.devicePrefix = devicePrefix
        self.createdAt = createdAt
        self.name = name
    }
}

/// A token file line that could not be read.
public struct TokenFileError: Error, Equatable, CustomStringConvertible {
    public var line: Int
    public var reason: String
    public var description: String { line == 0 ? reason : "token file line \(line): \(reason)" }
}

/// The token file: which tokens may connect, and which devices each may write (DESIGN §5, Auth).
///
/// Format, one token per line (`#` starts a comment):
///
///     <id> <sha256-hex> <device-prefix or *> <created-unix-seconds> [name…]
///
/// `*` stands for an empty prefix (every device). `sluiced token create|list|revoke` maintains the file; it
/// holds no secret, only hashes, but is still written with mode 0600.
public struct TokenTable: Sendable, Equatable {
    public var entries: [TokenEntry]

    public init(entries: [TokenEntry] = []) {
        self.entries = entries
    }

    public init(parsing text: String) throws(TokenFileError) {
        var entries: [TokenEntry] = []
        for (n, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            guard fields.count >= 4 else {
                throw TokenFileError(line: n + 1, reason: "expected \"<id> <sha256-hex> <device-prefix or *> <created>\", got \(fields.count) fields")
            }
            let hash = String(fields[1]).lowercased()
            guard hash.utf8.count == 64, hash.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                throw TokenFileError(line: n + 1, reason: "\"\(fields[1])\" is not a SHA-256 hex digest (64 hex digits)")
            }
            guard let created = Int64(fields[3]) else {
                throw TokenFileError(line: n + 1, reason: "created time \"\(fields[3])\" is not Unix seconds")
            }
            entries.append(
                TokenEntry(
                    id: String(fields[0]), hashHex: hash, devicePrefix: fields[2] == "*" ? "" : String(fields[2]),
                    createdAt: created, name: fields.dropFirst(4).joined(separator: " ")))
        }
        self.entries = entries
    }

    /// The file's text.
    public func serialized() -> String {
        var text = "# sluiced tokens: <id> <sha256-hex> <device-prefix or *> <created-unix-seconds> [name]\n"
        text += "# Managed by `sluiced token create|list|revoke`; tokens themselves are never stored.\n"
        for e in entries {
            text += "\(e.id) \(e.hashHex) \(e.devicePrefix.isEmpty ? "*" : e.devicePrefix) \(e.createdAt)"
            text += e.name.isEmpty ? "\n" : " \(e.name)\n"
        }
        return text
    }

    /// A new random token (printed once, to the operator) and its entry.
    public static func makeToken(
        devicePrefix: String, name: String, createdAt: Int64,
        using generator: inout some RandomNumberGenerator
    ) -> (token: String, entry: TokenEntry) {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let secret = String((0..<40).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
        let token = "slu_" + secret
        let hash = SHA256.hexDigest(token)
        return (
            token,
            TokenEntry(
                id: String(hash.prefix(8)), hashHex: hash, devicePrefix: devicePrefix, createdAt: createdAt,
                name: name)
        )
    }

    /// Checks what `sluiced token create` is given, so the file stores exactly that: a prefix of device-id
    /// characters (1–64 bytes of `[A-Za-z0-9._:-]`, or empty for any device) and a one-line name.
    public static func validate(devicePrefix: String, name: String) throws(TokenFileError) {
        if !devicePrefix.isEmpty {
            let ok = devicePrefix.utf8.count <= 64 && devicePrefix.utf8.allSatisfy { b in
                (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39)
                    || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: ":") || b == UInt8(ascii: "-")
            }
            if !ok {
                throw TokenFileError(
                    line: 0,
                    reason: "--prefix \(BatchValidator.quoted(devicePrefix)) is not a device-id prefix: use at most 64 bytes of [A-Za-z0-9._:-] (no spaces)")
            }
        }
        if name.utf8.count > 200 || name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "#" }) {
            throw TokenFileError(
                line: 0,
                reason: "--name \(BatchValidator.quoted(name)) must be one line of at most 200 bytes without control characters or \"#\"")
        }
    }

    /// Longest token `authorize` hashes; longer ones are refused as they are (made ones are 44 bytes).
    public static let maxTokenBytes = 256

    /// Whether a session may open, and which devices it may write.
    public enum Authorization: Sendable, Equatable {
        /// Allowed; device ids must start with `devicePrefix` (empty = any). `tokenID` nil = anonymous loopback.
        case allowed(devicePrefix: String, tokenID: String?)
        case denied(WireError)
    }

    /// Checks a `Hello`'s token. With no tokens configured only loopback clients are accepted, anonymously.
    public func authorize(token: String, peerIsLoopback: Bool) -> Authorization {
        if entries.isEmpty {
            guard peerIsLoopback else {
                return .denied(
                    WireError(
                        .unauthenticated,
                        "this server has no tokens configured and accepts loopback clients only: create a token with `sluiced token create` on the server"))
            }
            return .allowed(devicePrefix: "", tokenID: nil)
        }
        guard !token.isEmpty else {
            return .denied(WireError(.unauthenticated, "this server requires a token: pass one in Hello (e.g. sluice send --token)"))
        }
        guard token.utf8.count <= Self.maxTokenBytes else {
            // Refused unhashed: hashing what a stranger sends must cost at most a few blocks.
            return .denied(
                WireError(
                    .unauthenticated,
                    "token of \(token.utf8.count) bytes is longer than \(Self.maxTokenBytes) bytes: it cannot be one `sluiced token create` made"))
        }
        let hash = SHA256.hexDigest(token)
        // Compare every entry in full, so timing does not tell how much of a hash matched.
        var match: TokenEntry?
        for entry in entries where constantTimeEqual(entry.hashHex, hash) { match = entry }
        guard let match else {
            return .denied(WireError(.unauthenticated, "unknown or revoked token: ask the operator for a valid one (`sluiced token list`)"))
        }
        return .allowed(devicePrefix: match.devicePrefix, tokenID: match.id)
    }

    private func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}
