import Foundation
import Logging
import SluiceClient
import SluiceCore
import SluiceProtocol
import SluiceServer
import SluiceTestSupport
import Testing

/// TLS on the ingest listener, with the Swift client, real sockets and the real PostgreSQL: a throwaway CA and
/// server certificate made with openssl for each test.
@Suite struct TLSTests {
    /// An in-process server whose listener speaks only TLS, with the test certificate.
    func startTLSServer(database: String, certificates: TestCertificates, localhostOnly: Bool = false) async throws
        -> TestServer
    {
        let url = try await TestDatabase.freshDatabase(named: database)
        var logger = Logger(label: "test-sluiced-tls")
        logger.logLevel = .warning
        let server = SluiceServer(
            configuration: .init(
                host: "127.0.0.1", port: 0, writerPool: .init(databaseURL: url), eventLoopThreads: 1,
                tls: localhostOnly
                    ? .init(certificateChainPath: certificates.localhostOnlyCertificate, privateKeyPath: certificates.localhostOnlyKey)
                    : .init(certificateChainPath: certificates.serverCertificate, privateKeyPath: certificates.serverKey)),
            logger: logger)
        try await server.start()
        return TestServer(server: server, databaseURL: url)
    }

    func tlsConfiguration(_ endpoints: [Endpoint], trust: ClientTLS.Trust, serverName: String? = nil, batch: Int = 1_000)
        -> SluiceClientConfiguration
    {
        var configuration = clientConfiguration(endpoints, batch: batch)
        configuration.tls = ClientTLS(trust: trust, serverName: serverName)
        return configuration
    }

    /// Every reason the client gave for losing or not getting a connection.
    func disconnectReasons(_ client: SluiceClient) -> Task<[String], Never> {
        Task {
            var reasons: [String] = []
            for await event in client.events {
                if case .disconnected(_, let reason, _) = event { reasons.append(reason) }
            }
            return reasons
        }
    }

    @Test func aClientOverTLSGetsEveryReadingAcknowledgedAndStoredExactlyOnce() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let server = try await startTLSServer(database: "client_tls_ingest", certificates: certificates)
        // By IP address (checked against the certificate's IP entry) and by name (DNS entry, sent as SNI).
        let byAddress = try await SluiceClient(
            configuration: tlsConfiguration([server.endpoint], trust: .caFile(certificates.caCertificate), batch: 2_000))
        let byName = try await SluiceClient(
            configuration: tlsConfiguration(
                [Endpoint(host: "localhost", port: server.server.localPort)], trust: .caFile(certificates.caCertificate)))
        let lost = disconnectReasons(byAddress)
        try await byAddress.send(recentReadings(devices: 5, perDevice: 2_000, device: "tls-ip"))
        try await byName.send(recentReadings(devices: 2, perDevice: 500, device: "tls-name"))
        try await byAddress.close(timeout: .seconds(60))
        try await byName.close(timeout: .seconds(60))
        #expect(try server.rowCount() == 11_000)
        #expect(try server.distinctRowCount() == 11_000)
        let stats = await byAddress.statistics
        #expect(stats.readingsAcked == 10_000 && stats.readingsAccepted == 10_000)
        #expect(stats.reconnects == 0)
        #expect(await lost.value.isEmpty)
        await server.server.shutdown()
    }

    @Test func aPlaintextClientOnTheTLSListenerIsToldToUseTLSAndClosedWhileATLSClientBesideItIsUnaffected() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let server = try await startTLSServer(database: "client_tls_plaintext", certificates: certificates)
        let port = server.server.localPort
        let healthy = try await SluiceClient(
            configuration: tlsConfiguration([server.endpoint], trust: .caFile(certificates.caCertificate), batch: 500))
        let healthyLost = disconnectReasons(healthy)
        let readings = recentReadings(devices: 4, perDevice: 5_000, device: "tls-healthy")
        let sender = Task {
            for start in stride(from: 0, to: readings.count, by: 1_000) {
                try await healthy.send(Array(readings[start..<start + 1_000]))
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        // A sluice client without TLS gets an Error frame it can read, then the connection closes.
        let plain = try await RawClient.connect(port: port)
        try await plain.sendPreface()
        // The server may have answered the preface and closed already.
        try? await plain.send(ClientFrame(.hello(RawClient.hello(producer: producerID(120)))))
        let frames = try await plain.framesUntilClosed()
        guard case .error(let error)? = frames.first?.kind else {
            Issue.record("expected an Error frame, got \(frames)")
            return
        }
        #expect(error.code == .failedPrecondition)
        #expect(error.message.contains("speaks TLS only"))
        #expect(error.closing)
        #expect(!plain.isOpen)

        // Something else entirely (not TLS, not sluice) fails the TLS handshake: closed too.
        let http = try await RawClient.connect(port: port)
        try await http.sendBytes(Array("GET /status HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        _ = try? await http.framesUntilClosed()
        #expect(!http.isOpen)

        // The Swift client without TLS says why it cannot get in.
        // A long Welcome deadline: the answer is the server's refusal, whatever the load delays it by.
        var plainConfiguration = clientConfiguration([server.endpoint])
        plainConfiguration.connectTimeout = .seconds(60)
        let plainClient = try await SluiceClient(configuration: plainConfiguration)
        var reason: String?
        for await event in plainClient.events {
            if case .disconnected(_, let why, _) = event {
                reason = why
                break
            }
            if case .connected = event {
                reason = "a session opened without TLS"
                break
            }
        }
        #expect(reason?.contains("speaks TLS only") == true, "\(reason ?? "no reason")")
        try await plainClient.close()

        try await sender.value
        try await healthy.close(timeout: .seconds(60))
        #expect(try server.rowCount() == readings.count)
        #expect(try server.distinctRowCount() == readings.count)
        #expect(await healthy.statistics.reconnects == 0)
        let healthyReasons = await healthyLost.value
        #expect(healthyReasons.isEmpty, "the healthy client lost its connection: \(healthyReasons)")
        await server.server.shutdown()
    }

    @Test func aClientThatDoesNotTrustTheServersCertificateFailsNamingCertificateVerification() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        // A certificate for "localhost" without an IP address entry, so connecting to 127.0.0.1 under another
        // name cannot pass on the address alone.
        let server = try await startTLSServer(database: "client_tls_untrusted", certificates: certificates, localhostOnly: true)

        // Signed by a CA the client does not trust.
        let untrusting = try await SluiceClient(
            configuration: tlsConfiguration([server.endpoint], trust: .caFile(certificates.otherCACertificate)))
        try await untrusting.send(recentReadings(devices: 1, perDevice: 10))
        let failure = await #expect(throws: ClientError.self) { try await untrusting.flush(timeout: .seconds(30)) }
        guard case .tls(let endpoint, let reason)? = failure else {
            Issue.record("expected ClientError.tls, got \(String(describing: failure))")
            return
        }
        #expect(endpoint == server.endpoint.description)
        #expect(reason.contains("certificate verification failed"))
        #expect(reason.contains("CERTIFICATE_VERIFY_FAILED"))
        await #expect(throws: ClientError.self) { try await untrusting.close() }

        // Signed by the trusted CA, but for another name.
        let wrongName = try await SluiceClient(
            configuration: tlsConfiguration(
                [server.endpoint], trust: .caFile(certificates.caCertificate), serverName: "ingest.example.com"))
        try await wrongName.send(recentReadings(devices: 1, perDevice: 10))
        let mismatch = await #expect(throws: ClientError.self) { try await wrongName.flush(timeout: .seconds(30)) }
        #expect("\(mismatch.map { "\($0)" } ?? "")".contains("certificate verification failed"))
        #expect("\(mismatch.map { "\($0)" } ?? "")".contains("does not name the host"))
        await #expect(throws: ClientError.self) { try await wrongName.close() }

        #expect(try server.rowCount() == 0)
        await server.server.shutdown()
    }

    @Test func aTLSClientAgainstAPlaintextListenerIsToldTheServerDoesNotSpeakTLS() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let server = try await TestServer.start(database: "client_tls_vs_plain")
        let client = try await SluiceClient(
            configuration: tlsConfiguration([server.endpoint], trust: .caFile(certificates.caCertificate)))
        try await client.send(recentReadings(devices: 1, perDevice: 10))
        let failure = await #expect(throws: ClientError.self) { try await client.flush(timeout: .seconds(30)) }
        #expect("\(failure.map { "\($0)" } ?? "")".contains("does not speak TLS"), "\(String(describing: failure))")
        await #expect(throws: ClientError.self) { try await client.close() }
        await server.server.shutdown()
    }

    @Test func aMissingOrNonPEMCAFileIsAnErrorNamingTheFile() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let endpoint = Endpoint(host: "127.0.0.1", port: 1)
        let missing = certificates.directory + "/nope.pem"
        await #expect(throws: ClientError.tlsSetup("TLS CA file \(missing) does not exist")) {
            _ = try await SluiceClient(configuration: tlsConfiguration([endpoint], trust: .caFile(missing)))
        }
        await #expect(throws: ClientError.tlsSetup(
            "TLS CA file \(certificates.serverKey) holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        ) {
            _ = try await SluiceClient(configuration: tlsConfiguration([endpoint], trust: .caFile(certificates.serverKey)))
        }
    }

    @Test func aServerWithAMissingOrMismatchedKeyFailsToStartNamingTheFile() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        // TLS is checked before the database is touched: this URL is never dialled.
        func start(certificate: String, key: String) async throws {
            let server = SluiceServer(
                configuration: .init(
                    host: "127.0.0.1", port: 0, writerPool: .init(databaseURL: "postgresql://nobody@127.0.0.1:1/none"),
                    tls: .init(certificateChainPath: certificate, privateKeyPath: key)),
                logger: Logger(label: "test-sluiced-tls"))
            try await server.start()
            await server.shutdown()
        }
        let missing = certificates.directory + "/missing.key"
        let cases: [(certificate: String, key: String, message: String)] = [
            (certificates.serverCertificate, missing, "TLS private key file \(missing) does not exist"),
            (
                certificates.serverCertificate, certificates.otherKey,
                "TLS private key file \(certificates.otherKey) does not belong to the certificate in \(certificates.serverCertificate)"
            ),
            (
                certificates.serverKey, certificates.serverKey,
                "TLS certificate file \(certificates.serverKey) holds no readable PEM certificate (expected -----BEGIN CERTIFICATE-----)"
            ),
            (
                certificates.serverCertificate, certificates.serverCertificate,
                "TLS private key file \(certificates.serverCertificate) holds no readable PEM private key (expected -----BEGIN PRIVATE KEY-----, unencrypted)"
            ),
        ]
        for c in cases {
            let error = await #expect(throws: TLSSetupError.self) { try await start(certificate: c.certificate, key: c.key) }
            #expect(error?.description == c.message)
        }
    }
}
