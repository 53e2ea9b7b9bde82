import Foundation
import Testing

@testable import SluiceServer

#if canImport(Glibc)
    import Glibc
#endif

/// A unix datagram socket standing in for systemd's notify socket.
final class NotifySocket {
    let fd: Int32
    let address: String

    /// - Parameter abstract: bind in the abstract namespace (systemd's `@name` form) instead of a path.
    init(abstract: Bool = false) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        let name = abstract ? "@sluice-notify-\(UUID().uuidString)" : NSTemporaryDirectory() + "sluice-notify-\(UUID().uuidString).sock"
        address = name
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else { throw POSIXError(.EADDRINUSE) }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }

    /// Datagrams received until `deadline` passes or `until` is satisfied by what arrived.
    func receive(for duration: Duration, until: ([String]) -> Bool = { _ in false }) -> [String] {
        var messages: [String] = []
        let deadline = ContinuousClock.now + duration
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline, !until(messages) {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { messages.append(String(decoding: buffer[..<n], as: UTF8.self)) }
        }
        return messages
    }
}

@Suite struct SystemdNotifierTests {
    @Test(arguments: [false, true])
    func notificationsArriveOnPathAndAbstractSockets(abstract: Bool) throws {
        let socket = try NotifySocket(abstract: abstract)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.address])
        #expect(notifier.isEnabled)
        #expect(notifier.notify("READY=1\nSTATUS=listening"))
        #expect(socket.receive(for: .seconds(2)) { !$0.isEmpty } == ["READY=1\nSTATUS=listening"])
    }

    @Test func withoutNotifySocketEveryCallIsANoOp() {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        #expect(!notifier.notify("READY=1"))
    }

    @Test func watchdogIntervalComesFromTheEnvironment() {
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "20000000"]) == .seconds(20))
        #expect(SystemdNotifier.watchdogInterval(environment: [:]) == nil)
        #expect(
            SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"]) == nil,
            "a watchdog meant for another process is not ours")
    }
}
