/// A protocol failure: a status code for the peer and a message a person can act on.
///
/// Every way a frame can be wrong maps to one of these, so the server can answer with an `Error` frame that
/// names the problem (`PROTOCOL_ERROR: frame flags 0x04 use reserved bits …`) instead of just closing.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String

    public init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }
}

extension WireError {
    static func badPreface(_ got: [UInt8]) -> WireError {
        let hex = got.map { String($0, radix: 16, uppercase: false).leftPadded(to: 2) }.joined()
        let printable = String(decoding: got.map { (0x20..<0x7f).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
        return WireError(
            .protocolError,
            "connection must start with the preface \"SLU1\", got 0x\(hex) \"\(printable)\": is this a sluice v1 client?")
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Human-readable byte counts for error messages ("4 MiB", "70000 bytes").
func byteCount(_ n: Int) -> String {
    if n >= 1 << 20, n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
    if n >= 1 << 10, n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
    return "\(n) bytes"
}
