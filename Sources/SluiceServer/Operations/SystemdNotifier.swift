#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Speaks systemd's notify protocol: one datagram per state change to the socket named by `$NOTIFY_SOCKET`
/// (a path, or an abstract socket when it starts with `@`). Without that variable every call is a no-op, so
/// the daemon behaves the same outside systemd.
///
/// Each call opens, sends and closes a datagram socket: notifications are rare (start, stop, reload, a
/// watchdog ping every few seconds) and a socket per call keeps the type stateless and trivially `Sendable`.
public struct SystemdNotifier: Sendable {
    /// The socket address from `$NOTIFY_SOCKET`, or nil when not run by systemd.
    public let socketPath: String?

    public init(environment: [String: String]) {
        let path = environment["NOTIFY_SOCKET"]
        self.socketPath = (path?.isEmpty ?? true) ? nil : path
    }

    /// The watchdog interval systemd expects pings within (`$WATCHDOG_USEC`), if the watchdog is on and meant
    /// for this process (`$WATCHDOG_PID` absent or ours).
    public static func watchdogInterval(environment: [String: String]) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = Int64(text), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], let value = Int32(pid), value != getpid() { return nil }
        return .microseconds(usec)
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends `state`, e.g. `"READY=1\nSTATUS=listening on 127.0.0.1:7878"`. Returns false if it could not be
    /// delivered (systemd gone); the daemon carries on either way.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        guard let socketPath else { return false }
        #if os(Linux)
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
            let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        let abstract = pathBytes.first == UInt8(ascii: "@")
        if abstract { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        // Abstract addresses are length-delimited, not NUL-terminated.
        let length = MemoryLayout<sa_family_t>.size + pathBytes.count + (abstract ? 0 : 1)
        let payload = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                payload.withUnsafeBytes { bytes in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), sa, socklen_t(length))
                }
            }
        }
        return sent == payload.count
    }
}
