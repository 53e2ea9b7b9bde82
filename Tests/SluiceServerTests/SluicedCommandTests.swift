import Foundation
import SluiceCore
import SluiceProtocol
import SluiceTestSupport
import Testing

/// The `sluiced` executable's command line: settings precedence, clear errors, token administration.
@Suite struct SluicedCommandTests {
    func temporaryDirectory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "sluiced-\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func flagBeatsEnvironmentWhichBeatsTheConfigFile() async throws {
        let url = try await TestDatabase.freshDatabase(named: "srv_cmd_precedence")
        let dir = try temporaryDirectory("precedence")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/sluiced.conf"
        try """
            # the file loses to both
            listen = 127.0.0.1:1
            http = off
            database-url = postgresql://nobody@127.0.0.1:1/nowhere
            writers = 1
            """.write(toFile: config, atomically: true, encoding: .utf8)
        // The environment's database URL beats the file's; the flag's listen address beats the file's.
        let (daemon, port) = try await SluicedProcess.start(
            ["--config", config, "--listen", "127.0.0.1:0", "--state-dir", dir],
            environment: ["SLUICE_DATABASE_URL": url])
        defer { daemon.kill() }
        #expect(port != 1 && port > 0)
        #expect(daemon.log.contains("no tokens configured: accepting loopback clients only"))
        let client = try await RawClient.connect(port: port)
        try await client.handshake(producer: producerID(90))
        await client.close()
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func unknownConfigSettingIsAnErrorNamingTheLine() async throws {
        let dir = try temporaryDirectory("badconf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "http = off\nlisten_port = 9\n".write(toFile: dir + "/bad.conf", atomically: true, encoding: .utf8)
        let daemon = try SluicedProcess.launch(["--config", dir + "/bad.conf"])
        #expect(try await daemon.waitForExit() != 0)
        #expect(daemon.log.contains("bad.conf:2: unknown setting \"listen_port\""))
    }

    @Test func revokingAnUnknownTokenSaysSoWithoutUsageText() async throws {
        let dir = try temporaryDirectory("revoke-unknown")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let daemon = try SluicedProcess.launch(["token", "revoke", "--token-file", dir + "/tokens", "nope"])
        #expect(try await daemon.waitForExit() == 1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(daemon.log.contains("no token with id nope in \(dir)/tokens: see `sluiced token list`"), "\(daemon.log)")
        #expect(!daemon.log.contains("Usage:"), "\(daemon.log)")
    }

    @Test func tokensAreCreatedListedUsedAndRevoked() async throws {
        let url = try await TestDatabase.freshDatabase(named: "srv_cmd_tokens")
        let dir = try temporaryDirectory("tokens")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenFile = dir + "/tokens"
        let token = try await run(["token", "create", "--token-file", tokenFile, "--prefix", "plant1.", "--name", "gw 3"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // A second token keeps authentication on once the first is revoked (no tokens = loopback-only mode).
        _ = try await run(["token", "create", "--token-file", tokenFile, "--prefix", "plant2."])
        #expect(token.hasPrefix("slu_"))
        let stored = try String(contentsOfFile: tokenFile, encoding: .utf8)
        #expect(!stored.contains(token), "only the hash is stored")
        let list = try await run(["token", "list", "--token-file", tokenFile])
        #expect(list.contains("plant1.") && list.contains("gw 3"))
        let id = String(SHA256.hexDigest(token).prefix(8))
        #expect(list.contains(id))

        let (daemon, port) = try await SluicedProcess.start(
            ["--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--token-file", tokenFile])
        defer { daemon.kill() }
        let good = try await RawClient.connect(port: port)
        try await good.handshake(producer: producerID(91), token: token)
        await good.close()

        _ = try await run(["token", "revoke", "--token-file", tokenFile, id])
        daemon.signal(SIGHUP)
        // Event-driven, not a fixed sleep: the reload is done once the daemon logs it (slow on a loaded machine).
        let reloadDeadline = ContinuousClock.now + .seconds(30)
        while !daemon.log.contains("tokens reloaded"), ContinuousClock.now < reloadDeadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(daemon.log.contains("tokens reloaded"), "\(daemon.log)")
        let revoked = try await RawClient.connect(port: port)
        try await revoked.sendPreface()
        try await revoked.send(ClientFrame(.hello(RawClient.hello(producer: producerID(92), token: token))))
        let frames = try await revoked.framesUntilClosed()
        guard case .error(let e)? = frames.first?.kind else {
            Issue.record("expected UNAUTHENTICATED after revoke + SIGHUP, got \(frames)")
            return
        }
        #expect(e.code == .unauthenticated)
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func tokenFilesAreWrittenPrivatelyAndPrefixesAndNamesAreValidated() async throws {
        let dir = try temporaryDirectory("token-file")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenFile = dir + "/fresh/tokens"
        _ = try await run(["token", "create", "--token-file", tokenFile, "--prefix", "plant1.", "--name", "gw 3"])
        let fileMode = try FileManager.default.attributesOfItem(atPath: tokenFile)[.posixPermissions] as? Int
        #expect(fileMode == 0o600)
        let dirMode = try FileManager.default.attributesOfItem(atPath: dir + "/fresh")[.posixPermissions] as? Int
        #expect(dirMode == 0o700)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/fresh") == ["tokens"], "no temporary file left")
        let before = try String(contentsOfFile: tokenFile, encoding: .utf8)

        for (flag, value, expected) in [
            ("--prefix", "plant 1", "--prefix \"plant 1\" is not a device-id prefix"),
            ("--name", "gw\nevil 00 * 0", "--name \"gw\\nevil 00 * 0\" must be one line"),
        ] {
            let process = try SluicedProcess.launch(["token", "create", "--token-file", tokenFile, flag, value])
            #expect(try await process.waitForExit() != 0)
            try await Task.sleep(for: .milliseconds(50))
            #expect(process.log.contains(expected), "\(process.log)")
        }
        #expect(try String(contentsOfFile: tokenFile, encoding: .utf8) == before, "a refused create changed the file")
    }

    @Test func revokeReleasesProducersOnlyWhenAsked() async throws {
        let url = try await TestDatabase.freshDatabase(named: "srv_cmd_release")
        let dir = try temporaryDirectory("release")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenFile = dir + "/tokens"
        let first = try await run(["token", "create", "--token-file", tokenFile]).trimmingCharacters(in: .whitespacesAndNewlines)
        let second = try await run(["token", "create", "--token-file", tokenFile]).trimmingCharacters(in: .whitespacesAndNewlines)
        let third = try await run(["token", "create", "--token-file", tokenFile]).trimmingCharacters(in: .whitespacesAndNewlines)
        let (daemon, port) = try await SluicedProcess.start(
            ["--database-url", url, "--listen", "127.0.0.1:0", "--http", "off", "--token-file", tokenFile])
        defer { daemon.kill() }
        for (token, producer) in [(first, UInt8(93)), (second, UInt8(94))] {
            let c = try await RawClient.connect(port: port)
            try await c.handshake(producer: producerID(producer), token: token)
            await c.close()
        }
        let db = try TestConnection(url: url)
        #expect(try db.scalar("SELECT count(*) FROM producer_owners") == 2)
        // Revoked without the flag: its producer stays owned (by nobody who can connect).
        _ = try await run(["token", "revoke", "--token-file", tokenFile, String(SHA256.hexDigest(first).prefix(8))])
        #expect(try db.scalar("SELECT count(*) FROM producer_owners") == 2)
        // With it: freed, and another token may claim it.
        let out = try await run([
            "token", "revoke", "--token-file", tokenFile, "--database-url", url, "--release-producers",
            String(SHA256.hexDigest(second).prefix(8)),
        ])
        #expect(out.contains("1 producer id freed"), "\(out)")
        #expect(try db.scalar("SELECT count(*) FROM producer_owners") == 1)
        daemon.signal(SIGHUP)
        let claimed = try await RawClient.connect(port: port)
        try await claimed.handshake(producer: producerID(94), token: third)
        await claimed.close()
        let denied = try await RawClient.connect(port: port)
        try await denied.sendPreface()
        try await denied.send(ClientFrame(.hello(RawClient.hello(producer: producerID(93), token: third))))
        let frames = try await denied.framesUntilClosed()
        #expect(frames.contains { if case .error(let e)? = $0.kind { e.code == .permissionDenied } else { false } }, "\(frames)")
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    /// Runs a short `sluiced` command and returns its stdout.
    func run(_ arguments: [String]) async throws -> String {
        let process = try SluicedProcess.launch(arguments)
        let status = try await process.waitForExit()
        guard status == 0 else {
            throw TestSetupError("sluiced \(arguments.joined(separator: " ")) exited \(status): \(process.log)")
        }
        try await Task.sleep(for: .milliseconds(50))  // the last output may still be in flight from the pipe
        return process.output
    }
}
