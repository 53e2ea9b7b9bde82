import Foundation
import SluiceTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `sluice status` over several daemons, some of them dead or silent.
@Suite struct StatusEndToEndTests {
    @Test func statusShowsTwoLiveDaemonsAndReportsTheDeadAndSilentOnesWithinTheDeadline() async throws {
        let one = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_status_one"))
        let two = try await Sluiced.start(databaseURL: try await TestDatabase.freshDatabase(named: "e2e_status_two"))
        let dead = try closedPort()
        let silent = try SilentListener()
        defer { silent.close() }
        let started = ContinuousClock.now
        let status = try sluice([
            "status", "--http", "127.0.0.1:\(one.httpPort)", "--http", "127.0.0.1:\(two.httpPort)",
            "--http", "127.0.0.1:\(dead)", "--http", "127.0.0.1:\(silent.port)", "--deadline", "1", "--json",
        ])
        let code = try await status.waitForExit(timeout: .seconds(20))
        let elapsed = ContinuousClock.now - started
        #expect(code == 1)
        // One second per daemon, all at once, plus the CLI's own start-up — which on a loaded CI machine took
        // up to 3 s more (4.006 s was seen). Without the deadline, the silent one would hold it until the 20 s cap.
        #expect(elapsed < .seconds(8), "took \(elapsed)")
        let entries = try #require(
            try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]], "\(status.stdout)")
        #expect(entries.count == 4)
        let ok = entries.filter { $0["ok"] as? Bool == true }
        #expect(ok.count == 2)
        #expect(ok.allSatisfy { ($0["status"] as? [String: Any])?["database"] as? String == "ok" })
        let listens = Set(ok.compactMap { ($0["status"] as? [String: Any])?["listen"] as? String })
        #expect(listens == ["127.0.0.1:\(one.port)", "127.0.0.1:\(two.port)"])
        let errors = entries.filter { $0["ok"] as? Bool == false }.compactMap { $0["error"] as? String }
        #expect(errors.count == 2)
        #expect(errors.contains { $0.contains("refused") })
        #expect(errors.contains { $0.contains("within") })

        let table = try sluice(["status", "--http", "127.0.0.1:\(one.httpPort)", "--http", "127.0.0.1:\(dead)"])
        #expect(try await table.waitForExit() == 1)
        #expect(table.stdout.contains("127.0.0.1:\(one.httpPort)") && table.stdout.contains("ERROR"))
        await one.stop()
        await two.stop()
    }
}

/// A port nothing listens on (bound, then closed).
func closedPort() throws -> Int {
    let listener = try SilentListener()
    let port = listener.port
    listener.close()
    return port
}

/// A TCP listener that accepts connections (the kernel does) but never answers: a hung daemon.
final class SilentListener: Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw TestSetupError("cannot listen on 127.0.0.1") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() { _ = Glibc.close(fd) }
}
