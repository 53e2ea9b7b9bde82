import Foundation
import SluiceTestSupport
import Testing

/// `sluice send` over TLS to a `sluiced` started with `--tls-cert` and `--tls-key`, as an operator would run them.
@Suite struct TLSEndToEndTests {
    /// A TLS-only `sluiced` on a free port.
    func startTLSDaemon(databaseURL: String, certificates: TestCertificates) async throws -> (RunningProcess, port: Int) {
        let daemon = try await RunningProcess.sluiced(
            [
                "--listen", "127.0.0.1:0", "--database-url", databaseURL, "--http", "off",
                "--state-dir", certificates.directory, "--tls-cert", certificates.serverCertificate,
                "--tls-key", certificates.serverKey,
            ], name: "sluiced")
        let port = try await daemon.waitForStderr(#"sluiced: listening on 127\.0\.0\.1:(\d+)"#)
        return (daemon, Int(port)!)
    }

    @Test func sendWithTheCAOverTLSLandsEveryReadingExactlyOnce() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let url = try await TestDatabase.freshDatabase(named: "e2e_tls_send")
        let (daemon, port) = try await startTLSDaemon(databaseURL: url, certificates: certificates)
        #expect(daemon.stderr.contains("tls=on"), "\(daemon.stderr)")
        let file = try temporaryFile(csvLines(0..<20_000))
        defer { try? FileManager.default.removeItem(atPath: file) }
        // By name: the certificate's DNS entry, checked against the CA given.
        let send = try sluice(["send", file, "--server", "localhost:\(port)", "--tls-ca", certificates.caCertificate])
        #expect(try await send.waitForExit() == 0, "stderr: \(send.stderr)")
        #expect(send.stdout.contains("20,000 acknowledged"), "\(send.stdout)")
        let sql = "SELECT count(*), count(DISTINCT (device_id, metric, time)) FROM readings"
        let counts = try await onOwnThread { try TestConnection(url: url).query(sql) }
        #expect(counts == [["20000", "20000"]])
        daemon.kill(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func sendThatDoesNotTrustTheCertificateOrSpeaksPlainTCPFailsSayingWhy() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let (daemon, port) = try await startTLSDaemon(
            databaseURL: try await TestDatabase.freshDatabase(named: "e2e_tls_refused"), certificates: certificates)
        let file = try temporaryFile(csvLines(0..<100))
        defer { try? FileManager.default.removeItem(atPath: file) }

        // --tls trusts the system's CAs, which did not sign the test certificate: fails at once, exit 2.
        let untrusted = try sluice(["send", file, "--server", "127.0.0.1:\(port)", "--tls"])
        #expect(try await untrusted.waitForExit() == 2, "stderr: \(untrusted.stderr)")
        #expect(untrusted.stderr.contains("certificate verification failed"), "\(untrusted.stderr)")

        // Plain TCP to the TLS listener: each attempt is told to use TLS, until --timeout.
        let plain = try sluice(["send", file, "--server", "127.0.0.1:\(port)", "--timeout", "2"])
        #expect(try await plain.waitForExit() == 2, "stderr: \(plain.stderr)")
        #expect(plain.stderr.contains("speaks TLS only"), "\(plain.stderr)")

        // A CA file that is not there is a usage error naming it.
        let missing = try sluice(["send", file, "--server", "127.0.0.1:\(port)", "--tls-ca", certificates.directory + "/none.pem"])
        #expect(try await missing.waitForExit() != 0)
        #expect(missing.stderr.contains("--tls-ca \(certificates.directory)/none.pem: no such file"), "\(missing.stderr)")

        daemon.kill(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
    }
}
