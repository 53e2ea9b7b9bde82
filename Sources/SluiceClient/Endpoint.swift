/// A server address, `host:port`.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port`, or a bare `host` (which gets `defaultPort`).
    public init(parsing text: String, defaultPort: Int = 7878) throws(ClientError) {
        let trimmed = text.trimmingSpaces()
        guard !trimmed.isEmpty else { throw .invalidEndpoint(text, "it is empty; expected host:port") }
        var host = trimmed
        var portText: Substring?
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else {
                throw .invalidEndpoint(text, "an IPv6 address in [ ] is missing its closing ]")
            }
            host = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            let rest = trimmed[trimmed.index(after: close)...]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
                throw .invalidEndpoint(text, "expected :port after ]")
            }
        } else if let colon = trimmed.lastIndex(of: ":") {
            if trimmed[..<colon].contains(":") {
                throw .invalidEndpoint(text, "an IPv6 address must be written in brackets, e.g. [::1]:7878")
            }
            host = String(trimmed[..<colon])
            portText = trimmed[trimmed.index(after: colon)...]
        }
        guard !host.isEmpty else { throw .invalidEndpoint(text, "the host is empty") }
        var port = defaultPort
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw .invalidEndpoint(text, "port \"\(portText)\" is not a number in 1–65535")
            }
            port = p
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}
