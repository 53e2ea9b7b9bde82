import Foundation

/// A throwaway CA and a server certificate it signed for `localhost` and `127.0.0.1`, made with the `openssl`
/// command line in a temporary directory (tools/test installs openssl). A second, unrelated CA lets a test
/// show what a client that does not trust the server's CA sees.
public struct TestCertificates: Sendable {
    public let directory: String

    /// The CA that signed the server certificate (what `--tls-ca` is given).
    public var caCertificate: String { directory + "/ca.pem" }
    /// The server's certificate (what `--tls-cert` is given).
    public var serverCertificate: String { directory + "/server.pem" }
    /// The server certificate's private key (what `--tls-key` is given).
    public var serverKey: String { directory + "/server.key" }
    /// A CA that signed nothing here: a client trusting only it must refuse the server.
    public var otherCACertificate: String { directory + "/other-ca.pem" }
    /// A private key that does not belong to the server certificate.
    public var otherKey: String { directory + "/other-ca.key" }
    /// A server certificate (signed by the same CA) for the name `localhost` only, without an IP address entry:
    /// a client connecting to 127.0.0.1 under any other name must refuse it.
    public var localhostOnlyCertificate: String { directory + "/localhost-only.pem" }
    public var localhostOnlyKey: String { directory + "/localhost-only.key" }

    /// Makes a fresh set; runs `openssl` on a thread of its own (process waits must not block the pool).
    public static func make() async throws -> TestCertificates {
        let directory = NSTemporaryDirectory() + "sluice-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    try generate(in: directory)
                    continuation.resume(returning: TestCertificates(directory: directory))
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
    }

    /// Deletes the directory.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func generate(in dir: String) throws {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for (name, subject) in [("ca", "/CN=sluice test CA"), ("other-ca", "/CN=sluice unrelated CA")] {
            try openssl(
                ["req", "-x509"] + ec + [
                    "-days", "2", "-subj", subject, "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).pem",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ])
        }
        for (name, names) in [("server", "DNS:localhost, IP:127.0.0.1"), ("localhost-only", "DNS:localhost")] {
            try openssl(["req"] + ec + ["-subj", "/CN=localhost", "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).csr"])
            try """
                basicConstraints = CA:FALSE
                keyUsage = critical, digitalSignature
                extendedKeyUsage = serverAuth
                subjectAltName = \(names)
                """.write(toFile: "\(dir)/\(name).ext", atomically: true, encoding: .utf8)
            try openssl([
                "x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key",
                "-set_serial", "\(UInt32.random(in: 1...UInt32.max))", "-days", "2", "-extfile", "\(dir)/\(name).ext",
                "-out", "\(dir)/\(name).pem",
            ])
        }
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try ProcessLaunch.run(process)
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestSetupError(
                "openssl \(arguments.prefix(2).joined(separator: " ")) failed (\(process.terminationStatus)): "
                    + String(decoding: output, as: UTF8.self) + " (tools/test installs openssl)")
        }
    }
}
