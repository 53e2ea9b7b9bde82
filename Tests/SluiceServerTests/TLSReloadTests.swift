import Foundation
import SluiceClient
import SluiceServer
import SluiceTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Reloading the TLS certificate and key without a restart (`SluiceServer.reloadTLS()`, SIGHUP in `sluiced`):
/// new connections get the renewed certificate, open ones keep theirs, and bad files keep the current one.
/// Real sockets, the Swift client verifying the certificate, the real PostgreSQL; throwaway openssl CAs.
@Suite struct TLSReloadTests {
    /// The two files the server is configured with, overwritten in place as a renewal would.
    struct LiveFiles {
        let certificate: String
        let key: String

        init(in directory: String) {
            certificate = directory + "/live-server.pem"
            key = directory + "/live-server.key"
        }

        /// Replaces both files with the server certificate and key of `certificates`.
        func install(_ certificates: TestCertificates) throws {
            try copy(certificates.serverCertificate, to: certificate)
            try copy(certificates.serverKey, to: key)
        }

        func copy(_ source: String, to destination: String) throws {
            try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: destination), options: .atomic)
        }
    }

    /// Two certificate sets from unrelated CAs, with the first one's certificate and key installed as the
    /// files the server is started with.
    func twoCAsWithTheFirstLive() async throws -> (TestCertificates, TestCertificates, LiveFiles) {
        let first = try await TestCertificates.make()
        let second = try await TestCertificates.make()
        let live = LiveFiles(in: first.directory)
        try live.install(first)
        return (first, second, live)
    }

    func client(port: Int, trusting ca: String) async throws -> SluiceClient {
        try await SluiceClient(
            configuration: SluiceClientConfiguration(
                endpoints: [Endpoint(host: "127.0.0.1", port: port)], maxBatchReadings: 500,
                reconnectInitialDelay: .milliseconds(20), reconnectMaxDelay: .milliseconds(300),
                connectTimeout: .seconds(30), tls: ClientTLS(trust: .caFile(ca))))
    }

    /// `count` readings of one device, a second apart, ending a minute ago (inside the accepted window).
    func readings(device: String, count: Int) -> [Reading] {
        let base = Int64(Date().timeIntervalSince1970 * 1_000_000) - Int64(count + 60) * 1_000_000
        return (0..<count).map {
            Reading(deviceID: device, metric: "temp_c", timeMicros: base + Int64($0) * 1_000_000, value: Double($0))
        }
    }

    /// The reason a client that cannot get in gives for its first failed flush.
    func failure(of client: SluiceClient) async -> String {
        do {
            try await client.send(readings(device: "refused", count: 5))
            try await client.flush(timeout: .seconds(30))
            return "flushed"
        } catch {
            return "\(error)"
        }
    }

    @Test func aCertificateFromAnotherCAReloadedServesNewClientsWhileAnOpenConnectionKeepsWorking() async throws {
        let (first, second, live) = try await twoCAsWithTheFirstLive()
        defer {
            first.remove()
            second.remove()
        }
        let server = try await TestServer.start(database: "srv_tls_reload_ca") {
            $0.tls = .init(certificateChainPath: live.certificate, privateKeyPath: live.key)
        }
        let open = try await client(port: server.port, trusting: first.caCertificate)
        try await open.send(readings(device: "open-before", count: 200))
        try await open.flush(timeout: .seconds(30))

        try live.install(second)
        let expiry = try await server.server.reloadTLS()
        // The test certificates are valid for two days.
        #expect(expiry.map { $0 > Date().addingTimeInterval(86_400) } == true, "\(String(describing: expiry))")

        // A new client trusting the new CA gets in and its readings are acked.
        let renewed = try await client(port: server.port, trusting: second.caCertificate)
        try await renewed.send(readings(device: "renewed", count: 300))
        try await renewed.close(timeout: .seconds(30))
        #expect(await renewed.statistics.readingsAcked == 300)

        // A new client trusting only the old CA now refuses the server.
        let stale = try await client(port: server.port, trusting: first.caCertificate)
        let reason = await failure(of: stale)
        #expect(reason.contains("certificate verification failed"), "\(reason)")
        await #expect(throws: ClientError.self) { try await stale.close() }

        // The connection opened before the reload kept its session: more readings, more acks, no reconnect.
        try await open.send(readings(device: "open-after", count: 200))
        try await open.close(timeout: .seconds(30))
        let stats = await open.statistics
        #expect(stats.readingsAcked == 400)
        #expect(stats.reconnects == 0)

        #expect(try server.readingRows == 700)
        await server.stop()
    }

    @Test func aReloadWithABrokenKeyKeepsTheCurrentCertificateAndSaysWhichFileIsWrong() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let live = LiveFiles(in: certificates.directory)
        try live.install(certificates)
        let server = try await TestServer.start(database: "srv_tls_reload_bad") {
            $0.tls = .init(certificateChainPath: live.certificate, privateKeyPath: live.key)
        }

        // Not a PEM key, the key of another certificate, no file at all: each the start-up error, nothing swapped.
        try Data("not a key\n".utf8).write(to: URL(fileURLWithPath: live.key))
        let garbage = await #expect(throws: TLSSetupError.self) { try await server.server.reloadTLS() }
        #expect(
            garbage?.description
                == "TLS private key file \(live.key) holds no readable PEM private key (expected -----BEGIN PRIVATE KEY-----, unencrypted)")
        try live.copy(certificates.otherKey, to: live.key)
        let mismatched = await #expect(throws: TLSSetupError.self) { try await server.server.reloadTLS() }
        #expect(
            mismatched?.description == "TLS private key file \(live.key) does not belong to the certificate in \(live.certificate)")
        try FileManager.default.removeItem(atPath: live.key)
        let missing = await #expect(throws: TLSSetupError.self) { try await server.server.reloadTLS() }
        #expect(missing?.description == "TLS private key file \(live.key) does not exist")

        // The certificate loaded at start still serves new connections.
        let client = try await client(port: server.port, trusting: certificates.caCertificate)
        try await client.send(readings(device: "after-bad-reload", count: 100))
        try await client.close(timeout: .seconds(30))
        #expect(await client.statistics.readingsAcked == 100)
        #expect(try server.readingRows == 100)
        await server.stop()
    }

    @Test func sighupMakesSluicedServeARenewedCertificateAndABadOneLeavesItRunning() async throws {
        let (first, second, live) = try await twoCAsWithTheFirstLive()
        defer {
            first.remove()
            second.remove()
        }
        let url = try await TestDatabase.freshDatabase(named: "srv_tls_reload_sighup")
        let (daemon, port) = try await SluicedProcess.start([
            "--tls-cert", live.certificate, "--tls-key", live.key, "--listen", "127.0.0.1:0", "--http", "off",
            "--database-url", url, "--state-dir", first.directory,
        ])
        defer { daemon.kill() }

        // A key that does not match: logged with the file's name, the daemon carries on.
        try live.copy(first.otherKey, to: live.key)
        daemon.signal(SIGHUP)
        #expect(await waitForLog(daemon, "TLS reload failed"), "\(daemon.log)")
        #expect(daemon.log.contains("TLS private key file \(live.key) does not belong to the certificate"), "\(daemon.log)")

        try live.install(second)
        daemon.signal(SIGHUP)
        #expect(await waitForLog(daemon, "TLS certificate reloaded"), "\(daemon.log)")
        #expect(daemon.log.contains("not_valid_after="), "\(daemon.log)")
        let renewed = try await client(port: port, trusting: second.caCertificate)
        try await renewed.send(readings(device: "sighup-renewed", count: 100))
        try await renewed.close(timeout: .seconds(30))
        #expect(await renewed.statistics.readingsAcked == 100)
        #expect(try TestConnection(url: url).scalar("SELECT count(*) FROM readings") == 100)

        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    func waitForLog(_ daemon: SluicedProcess, _ text: String) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while !daemon.log.contains(text), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return daemon.log.contains(text)
    }
}
