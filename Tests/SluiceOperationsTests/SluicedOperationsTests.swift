import Foundation
import SluiceTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real `sluiced` as systemd and an operator see it: notify messages, config checking, log formats and
/// SIGHUP reloads.
@Suite struct SluicedOperationsTests {
    @Test func readyAfterListeningWatchdogWhileHealthyAndStoppingOnSigterm() async throws {
        let url = try await TestDatabase.freshDatabase(named: "ops_notify")
        let notify = try NotifySocket()
        let (daemon, _) = try await SluicedProcess.start(
            ["--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--state-dir", NSTemporaryDirectory()],
            environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"])
        defer { daemon.kill() }
        // start() returned once the listening line was printed; READY=1 follows it.
        let early = notify.receive(for: .seconds(10)) { messages in
            messages.filter { $0.contains("WATCHDOG=1") }.count >= 2
        }
        let ready = try #require(early.firstIndex { $0.hasPrefix("READY=1") }, "READY=1 sent: \(early)")
        #expect(early[ready].contains("STATUS=listening on 127.0.0.1:"))
        let pings = early.filter { $0.contains("WATCHDOG=1") }
        #expect(pings.count >= 2, "watchdog pinged at half the 1 s interval: \(early)")
        #expect(pings.allSatisfy { $0.contains("connections") && $0.contains("readings/s") }, "\(pings)")

        daemon.signal(SIGTERM)
        let late = notify.receive(for: .seconds(10)) { $0.contains { $0.hasPrefix("STOPPING=1") } }
        #expect(late.contains { $0.hasPrefix("STOPPING=1") }, "STOPPING=1 on SIGTERM: \(late)")
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func noReadyWhenPostgreSQLIsUnreachableAtStart() async throws {
        let notify = try NotifySocket()
        let daemon = try SluicedProcess.launch(
            ["--database-url", "postgresql://sluice@127.0.0.1:1/nowhere?connect_timeout=2", "--listen", "127.0.0.1:0",
                "--http", "off", "--state-dir", NSTemporaryDirectory()],
            environment: ["NOTIFY_SOCKET": notify.address])
        defer { daemon.kill() }
        let status = try await daemon.waitForExit(timeout: .seconds(60))
        #expect(status != 0, "sluiced fails when the database is unreachable: \(daemon.log)")
        #expect(!notify.receive(for: .milliseconds(300)).contains { $0.contains("READY=1") })
        #expect(daemon.log.contains("127.0.0.1"), "the error names the database it could not reach: \(daemon.log)")
    }

    @Test func sighupReloadsTheLogLevelAndTellsSystemd() async throws {
        let url = try await TestDatabase.freshDatabase(named: "ops_reload")
        let dir = NSTemporaryDirectory() + "sluice-ops-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/sluiced.conf"
        try "log-level = info\n".write(toFile: config, atomically: true, encoding: .utf8)
        let notify = try NotifySocket()
        let (daemon, _) = try await SluicedProcess.start(
            ["--config", config, "--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--state-dir", dir],
            environment: ["NOTIFY_SOCKET": notify.address])
        defer { daemon.kill() }
        _ = notify.receive(for: .seconds(30)) { $0.contains { $0.hasPrefix("READY=1") } }

        try "log-level = debug\n".write(toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let messages = notify.receive(for: .seconds(30)) { m in
            m.contains { $0.hasPrefix("RELOADING=1") } && m.contains { $0.hasPrefix("READY=1") }
        }
        #expect(messages.contains { $0.hasPrefix("RELOADING=1") }, "\(messages)")
        #expect(messages.last { !$0.contains("WATCHDOG") }?.hasPrefix("READY=1") == true, "\(messages)")
        let deadline = ContinuousClock.now + .seconds(30)
        while !daemon.log.contains("log level changed"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(daemon.log.contains("log level changed"), "\(daemon.log)")
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func jsonLogFormatWritesOneObjectPerLine() async throws {
        let url = try await TestDatabase.freshDatabase(named: "ops_json_log")
        let (daemon, _) = try await SluicedProcess.start(
            ["--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--log-format", "json",
                "--state-dir", NSTemporaryDirectory()])
        defer { daemon.kill() }
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        let lines = daemon.log.split(separator: "\n").filter { !$0.hasPrefix("sluiced: listening") }
        #expect(lines.count >= 2)
        for line in lines {
            let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            #expect(object?["msg"] != nil && object?["level"] != nil, "not a JSON log line: \(line)")
        }
    }

    @Test func checkConfigPrintsTheEffectiveSettingsWithSecretsMasked() async throws {
        let dir = NSTemporaryDirectory() + "sluice-ops-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/sluiced.conf"
        try "writers = 3\ndatabase-url = postgresql://sluice:hunter2@db.example:5432/sluice\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let ok = try SluicedProcess.launch(
            ["--config", config, "--check-config", "--listen", "127.0.0.1:9999", "--state-dir", dir],
            environment: ["SLUICE_LOG_LEVEL": "debug"])
        #expect(try await ok.waitForExit() == 0, "\(ok.log)")
        let printed = ok.output
        #expect(printed.contains("writers = 3  # \(config):1"), "\(printed)")
        #expect(printed.contains("listen = 127.0.0.1:9999  # --listen"), "\(printed)")
        #expect(printed.contains("log-level = debug  # $SLUICE_LOG_LEVEL"), "\(printed)")
        #expect(printed.contains("postgresql://sluice:*****@db.example:5432/sluice"), "\(printed)")
        #expect(!printed.contains("hunter2"))

        try "writers = lots\n".write(toFile: config, atomically: true, encoding: .utf8)
        let bad = try SluicedProcess.launch(["--config", config, "--check-config", "--state-dir", dir])
        #expect(try await bad.waitForExit() != 0)
        #expect(bad.log.contains("writers") && bad.log.contains("lots") && bad.log.contains("\(config):1"), "\(bad.log)")
    }
}
