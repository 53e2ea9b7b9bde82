import Foundation
import SluiceProtocol
import SluiceTestSupport
import Testing

/// The `sluiced` executable's TLS settings: both or neither, clear errors naming the file, and a listener that
/// speaks TLS and says so.
@Suite struct TLSSluicedTests {
    /// Never dialled: the TLS errors come first.
    static let unreachableDatabase = "postgresql://nobody@127.0.0.1:1/none"

    @Test func aCertificateWithoutItsKeyIsAConfigErrorNamingTheMissingOne() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let onlyCert = try SluicedProcess.launch([
            "--tls-cert", certificates.serverCertificate, "--listen", "127.0.0.1:0", "--http", "off",
            "--database-url", Self.unreachableDatabase, "--state-dir", certificates.directory,
        ])
        #expect(try await onlyCert.waitForExit() != 0)
        #expect(onlyCert.log.contains("tls-cert = \"\(certificates.serverCertificate)\" (from --tls-cert) needs tls-key"), "\(onlyCert.log)")
        #expect(!onlyCert.log.contains("listening on"))

        let onlyKey = try SluicedProcess.launch(
            ["--check-config", "--state-dir", certificates.directory], environment: ["SLUICE_TLS_KEY": certificates.serverKey])
        #expect(try await onlyKey.waitForExit() != 0)
        #expect(onlyKey.log.contains("(from $SLUICE_TLS_KEY) needs tls-cert"), "\(onlyKey.log)")
    }

    @Test func aMissingKeyFileFailsStartUpNamingTheFile() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let missing = certificates.directory + "/server-missing.key"
        let daemon = try SluicedProcess.launch([
            "--tls-cert", certificates.serverCertificate, "--tls-key", missing, "--listen", "127.0.0.1:0",
            "--http", "off", "--database-url", Self.unreachableDatabase, "--state-dir", certificates.directory,
        ])
        #expect(try await daemon.waitForExit() != 0)
        #expect(daemon.log.contains("TLS private key file \(missing) does not exist"), "\(daemon.log)")
        #expect(!daemon.log.contains("listening on"))
    }

    @Test func checkConfigShowsWhereEachTLSSettingCameFromAndChecksTheFiles() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let config = certificates.directory + "/sluiced.conf"
        try "tls-key = \(certificates.serverKey)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let ok = try SluicedProcess.launch(
            ["--config", config, "--check-config", "--state-dir", certificates.directory],
            environment: ["SLUICE_TLS_CERT": certificates.serverCertificate])
        #expect(try await ok.waitForExit() == 0, "\(ok.log)")
        try await Task.sleep(for: .milliseconds(50))  // the last output may still be in flight from the pipe
        #expect(ok.output.contains("tls-cert = \(certificates.serverCertificate)  # $SLUICE_TLS_CERT"), "\(ok.output)")
        #expect(ok.output.contains("tls-key = \(certificates.serverKey)  # \(config):1"), "\(ok.output)")

        // The key of another certificate: caught by --check-config, not at the first handshake.
        try "tls-key = \(certificates.otherKey)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let bad = try SluicedProcess.launch(
            ["--config", config, "--check-config", "--state-dir", certificates.directory],
            environment: ["SLUICE_TLS_CERT": certificates.serverCertificate])
        #expect(try await bad.waitForExit() != 0)
        #expect(bad.log.contains("\(certificates.otherKey) does not belong to the certificate"), "\(bad.log)")
    }

    @Test func sluicedWithACertificateServesTLSOnlyAndSaysSoWhenReady() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let url = try await TestDatabase.freshDatabase(named: "srv_tls_sluiced")
        let (daemon, port) = try await SluicedProcess.start([
            "--tls-cert", certificates.serverCertificate, "--tls-key", certificates.serverKey, "--listen", "127.0.0.1:0",
            "--http", "off", "--database-url", url, "--state-dir", certificates.directory,
        ])
        defer { daemon.kill() }
        #expect(daemon.log.contains("tls=on"), "\(daemon.log)")
        // A plaintext client is told to use TLS; the daemon carries on.
        let plain = try await RawClient.connect(port: port)
        try await plain.sendPreface()
        try? await plain.send(ClientFrame(.hello(RawClient.hello(producer: producerID(121)))))  // may be closed already
        let frames = try await plain.framesUntilClosed()
        guard case .error(let error)? = frames.first?.kind else {
            Issue.record("expected an Error frame, got \(frames)")
            return
        }
        #expect(error.code == .failedPrecondition && error.message.contains("speaks TLS only"))
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        #expect(daemon.log.contains("plaintext client on the TLS listener"), "\(daemon.log)")
    }
}
