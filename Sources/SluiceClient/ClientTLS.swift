import Foundation
import NIOCore
import NIOSSL
import SluiceProtocol

/// TLS for the connection to sluiced (for devices whose connections cross the internet).
///
/// The client always verifies the server: its certificate must chain to a trusted CA and name the host
/// connected to (its DNS name; a certificate listing the IP address connected to is accepted too).
///
/// ```swift
/// var configuration = SluiceClientConfiguration(endpoints: [Endpoint(host: "ingest.example.com", port: 7878)])
/// configuration.tls = ClientTLS(trust: .caFile("/etc/sluice/ca.pem"))
/// ```
public struct ClientTLS: Sendable, Hashable {
    /// Which certificate authorities the client trusts to vouch for the server.
    public enum Trust: Sendable, Hashable {
        /// The operating system's trusted CAs (a certificate from a public CA).
        case systemRoots
        /// Only the CA certificates in this PEM file (a private CA, or a self-signed server certificate).
        case caFile(String)
    }

    public var trust: Trust
    /// The name the server's certificate must carry, also sent as SNI. nil = each endpoint's host; an IP
    /// address is checked against the certificate's IP address entries.
    public var serverName: String?

    public init(trust: Trust = .systemRoots, serverName: String? = nil) {
        self.trust = trust
        self.serverName = serverName
    }
}

/// A `ClientTLS` turned into what connections use: built once per client, reused across reconnects.
struct ClientTLSSetup: Sendable {
    let context: NIOSSLContext
    let serverName: String?

    /// Reads the CA file and builds the TLS context. Blocking file I/O: call it on a thread that may block.
    static func make(_ tls: ClientTLS) throws(ClientError) -> ClientTLSSetup {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        switch tls.trust {
        case .systemRoots:
            configuration.trustRoots = .default
        case .caFile(let path):
            configuration.trustRoots = .certificates(try loadCertificates(path))
        }
        do {
            return ClientTLSSetup(context: try NIOSSLContext(configuration: configuration), serverName: tls.serverName)
        } catch {
            let source = if case .caFile(let path) = tls.trust { "the CA file \(path)" } else { "the system's trusted CAs" }
            throw .tlsSetup("cannot set up TLS with \(source): \(error)")
        }
    }

    private static func loadCertificates(_ path: String) throws(ClientError) -> [NIOSSLCertificate] {
        let data: [UInt8]
        switch PEMFile.read(path, what: "TLS CA file") {
        case .success(let bytes): data = bytes
        case .failure(let error): throw .tlsSetup(error.description)
        }
        let certificates = try? NIOSSLCertificate.fromPEMBytes(data)
        guard let certificates, !certificates.isEmpty else {
            throw .tlsSetup("TLS CA file \(path) holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    /// The name to verify and send as SNI for `host`: nil for an IP address (SNI cannot carry one; NIOSSL then
    /// checks the certificate's IP entries against the address connected to).
    func sniName(for host: String) -> String? {
        let name = serverName ?? host
        return (try? SocketAddress(ipAddress: name, port: 0)) == nil ? name : nil
    }

    /// The handler that goes first in a connection's pipeline.
    func handler(for host: String) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: sniName(for: host))
    }
}

/// What a TLS failure on a connection means for the client.
struct TLSFailure: Equatable {
    /// A sentence for people.
    var reason: String
    /// Retrying cannot help until someone changes a certificate or a setting.
    var fatal: Bool

    /// nil when `error` is not a TLS error.
    init?(_ error: any Error) {
        switch error {
        case NIOSSLError.handshakeFailed(let underlying):
            let text = "\(underlying)"
            let codes = TLSReasonCodes.codes(in: text)
            if text.contains("EOF during handshake") {
                self.init(reason: "the server closed the connection during the TLS handshake", fatal: false)
            } else if codes.contains("CERTIFICATE_VERIFY_FAILED") {
                self.init(
                    reason: "TLS certificate verification failed: the server's certificate is not signed by a CA this "
                        + "client trusts, or has expired (CERTIFICATE_VERIFY_FAILED); give the CA that signed it "
                        + "(sluice --tls-ca FILE)",
                    fatal: true)
            } else if codes.contains(where: { ["WRONG_VERSION_NUMBER", "UNEXPECTED_RECORD", "RECORD_TOO_LARGE", "HTTP_REQUEST"].contains($0) }) {
                self.init(
                    reason: "the server does not speak TLS (\(codes.joined(separator: ", "))): is sluiced started with "
                        + "--tls-cert and --tls-key? Without them, connect without --tls",
                    fatal: true)
            } else {
                let names = codes.isEmpty ? text : codes.joined(separator: ", ")
                self.init(reason: "TLS handshake failed (\(names))", fatal: false)
            }
        case let extra as NIOSSLExtraError where extra == .failedToValidateHostname:
            self.init(
                reason: "TLS certificate verification failed: the server's certificate does not name the host "
                    + "connected to (\(extra)); connect by a name it lists, or set the TLS server name (--tls-server-name)",
                fatal: true)
        case NIOSSLError.uncleanShutdown:
            self.init(reason: "the server closed the TLS connection without a close_notify", fatal: false)
        case let ssl as NIOSSLError:
            self.init(reason: "TLS error: \(ssl)", fatal: false)
        case let boring as BoringSSLError:
            self.init(reason: "TLS error: \(boring)", fatal: false)
        default:
            return nil
        }
    }

    init(reason: String, fatal: Bool) {
        self.reason = reason
        self.fatal = fatal
    }
}
