import Foundation
import SluiceTestSupport
import Testing

/// The embedded PostgreSQL (sluiced without --database-url) is private: another local user cannot connect
/// by TCP or by the socket, while sluiced and `sluiced psql` can; the state directory is created private; and
/// a state directory of an older version (trust on 127.0.0.1) is migrated at start.
@Suite(.timeLimit(.minutes(5))) struct EmbeddedDatabaseEndToEndTests {
    @Test func anotherLocalUserCannotConnectWhileSluicedAndSluicedPsqlCan() async throws {
        guard geteuid() == 0 else { return }  // `runuser -u nobody` needs root
        let psql = try psqlPath()
        // The parent must let the cluster's user (postgres) through; the state directory itself is created by sluiced.
        let parent = NSTemporaryDirectory() + "sluice-embedded-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        chmod(parent, 0o755)
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let stateDir = parent + "/state"

        var daemon = try await startEmbedded(stateDir: stateDir)
        do {
            var info = stat()
            #expect(stat(stateDir, &info) == 0)
            // Root runs the cluster as postgres: 0710 with group postgres lets it through and nobody else.
            #expect(info.st_mode & 0o777 == 0o710 || info.st_mode & 0o777 == 0o700, "mode \(String(info.st_mode & 0o777, radix: 8))")
            #expect(info.st_mode & 0o007 == 0)
            let port = try String(contentsOfFile: stateDir + "/postgres.port", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)

            // sluiced itself is connected (it migrated the schema); `sluiced psql` gets in as user sluice.
            let ours = try await run(try Binaries.path("sluiced"), ["psql", "--state-dir", stateDir, "--", "-XAtc", "SELECT current_user, count(*) FROM readings"])
            #expect(ours.status == 0 && ours.output.contains("sluice|0"), "sluiced psql: \(ours.output)")

            // nobody: no TCP listener, and the socket directory is closed to them.
            let tcp = try await run("/usr/sbin/runuser", ["-u", "nobody", "--", psql, "-X", "postgresql://sluice@127.0.0.1:\(port)/postgres", "-c", "SELECT 1"])
            #expect(tcp.status != 0, "nobody connected over TCP: \(tcp.output)")
            let socket = try await run("/usr/sbin/runuser", ["-u", "nobody", "--", psql, "-X", "-h", stateDir + "/postgres", "-p", port, "-U", "sluice", "-d", "postgres", "-c", "SELECT 1"])
            #expect(socket.status != 0, "nobody connected over the socket: \(socket.output)")
            #expect(socket.output.contains("Permission denied") || socket.output.contains("No such file"), "\(socket.output)")
            let hba = try String(contentsOfFile: stateDir + "/postgres/pg_hba.conf", encoding: .utf8)
            #expect(!hba.split(separator: "\n").contains { $0.hasPrefix("host") && $0.contains("trust") })
            #expect(await stop(daemon) == 0, "\(daemon.stderr.suffix(2000))")

            // A state directory of the old version: trust over TCP in pg_hba.conf. The next start rewrites it.
            try "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
                .write(toFile: stateDir + "/postgres/pg_hba.conf", atomically: false, encoding: .utf8)
            daemon = try await startEmbedded(stateDir: stateDir)
            let migrated = try String(contentsOfFile: stateDir + "/postgres/pg_hba.conf", encoding: .utf8)
            #expect(!migrated.contains("127.0.0.1/32 trust"))
            let again = try await run(try Binaries.path("sluiced"), ["psql", "--state-dir", stateDir, "--", "-XAtc", "SELECT 1"])
            #expect(again.status == 0 && again.output.contains("1"), "\(again.output)")
            let tcpAgain = try await run("/usr/sbin/runuser", ["-u", "nobody", "--", psql, "-X", "postgresql://sluice@127.0.0.1:\(port)/postgres", "-c", "SELECT 1"])
            #expect(tcpAgain.status != 0, "nobody connected over TCP after the migration: \(tcpAgain.output)")
            #expect(await stop(daemon) == 0, "\(daemon.stderr.suffix(2000))")
        } catch {
            _ = await stop(daemon)
            throw error
        }
    }

    /// The README's first command in a clone under /root or `mktemp -d` (mode 0700): root runs the cluster as
    /// postgres, who cannot enter the state directory. The data directory goes elsewhere, linked from the
    /// state directory; the daemon serves, restarts onto the same data, and `sluiced psql` and
    /// `sluiced token revoke --release-producers` reach it.
    @Test func aStateDirectoryTheClusterUserCannotEnterStillGetsItsDatabase() async throws {
        let parent = NSTemporaryDirectory() + "sluice-private-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        chmod(parent, 0o700)
        let relocated = NSTemporaryDirectory() + "sluice-relocated-\(UInt32.random(in: 0 ... .max))"
        defer {
            try? FileManager.default.removeItem(atPath: parent)
            try? FileManager.default.removeItem(atPath: relocated)
        }
        let stateDir = parent + "/state"
        let environment = ["SLUICE_EMBEDDED_ROOT": relocated]
        let sluiced = try Binaries.path("sluiced")
        let tokenFile = stateDir + "/tokens"
        var daemon = try await startEmbedded(stateDir: stateDir, environment: environment, extra: ["--token-file", tokenFile])
        do {
            let link = try? FileManager.default.destinationOfSymbolicLink(atPath: stateDir + "/postgres")
            if geteuid() == 0 {
                #expect(daemon.stderr.contains("cannot enter \(parent)"), "\(daemon.stderr.suffix(2000))")
                #expect(link?.hasPrefix(relocated + "/") == true, "\(link ?? "no link")")
            } else {
                #expect(link == nil, "a cluster run as the current user stays in the state directory")
            }
            let token = try await run(sluiced, ["token", "create", "--token-file", tokenFile])
            #expect(token.status == 0, "\(token.output)")
            let port = try await daemon.waitForStderr(#"sluiced: listening on 127\.0\.0\.1:(\d+)"#, timeout: .seconds(5))
            let send = try RunningProcess(try Binaries.path("sluice"), ["send", "--server", "127.0.0.1:\(port)"], name: "sluice send")
            await send.writeStdin(csvLines(0 ..< 300, base: Int64(Date().timeIntervalSince1970) - 3_600))
            send.closeStdin()
            #expect(try await send.waitForExit() == 0, "\(send.stdout)\(send.stderr)")
            #expect(await stop(daemon) == 0, "\(daemon.stderr.suffix(2000))")

            daemon = try await startEmbedded(stateDir: stateDir, environment: environment, extra: ["--token-file", tokenFile])
            #expect(!daemon.stderr.contains("cannot enter"), "the second start finds the link, it does not relocate again")
            let count = try await run(sluiced, ["psql", "--state-dir", stateDir, "--", "-XAtc", "SELECT count(*) FROM readings"])
            #expect(count.status == 0 && count.output.contains("300"), "sluiced psql: \(count.output)")
            let listed = try await run(sluiced, ["token", "list", "--token-file", tokenFile])
            let tokenID = listed.output.split(separator: "\n").dropFirst().first.map { String($0.split(separator: " ").first ?? "") } ?? ""
            let revoke = try await run(
                sluiced, ["token", "revoke", "--token-file", tokenFile, "--state-dir", stateDir, "--release-producers", tokenID])
            #expect(revoke.status == 0 && revoke.output.contains("producer id"), "revoke over the embedded cluster's socket: \(revoke.output)")
            #expect(await stop(daemon) == 0, "\(daemon.stderr.suffix(2000))")
        } catch {
            _ = await stop(daemon)
            throw error
        }
    }

    private func startEmbedded(stateDir: String, environment: [String: String] = [:], extra: [String] = []) async throws -> RunningProcess {
        let process = try await RunningProcess.sluiced(
            ["--listen", "127.0.0.1:0", "--http", "off", "--state-dir", stateDir, "--writers", "1", "--log-level", "info"] + extra,
            name: "sluiced (embedded)", environment: environment)
        try await process.waitForStderr(#"sluiced: listening on 127\.0\.0\.1:(\d+)"#, timeout: .seconds(120))
        return process
    }

    /// SIGTERM, which also stops the embedded cluster; SIGKILL if it lingers.
    @discardableResult
    private func stop(_ process: RunningProcess) async -> Int32? {
        process.kill(SIGTERM)
        if let code = try? await process.waitForExit(timeout: .seconds(60)) { return code }
        process.kill(SIGKILL)
        return nil
    }

    private func psqlPath() throws -> String {
        let bin = ProcessInfo.processInfo.environment["SLUICE_TEST_PG_BINDIR"] ?? "/usr/bin"
        for candidate in [bin + "/psql", "/usr/bin/psql"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw TestSetupError("psql not found in \(bin)")
    }

    private func run(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        let process = try RunningProcess(executable, arguments, name: (executable as NSString).lastPathComponent)
        process.closeStdin()
        let status = try await process.waitForExit(timeout: .seconds(60))
        return (status, process.stdout + process.stderr)
    }
}
