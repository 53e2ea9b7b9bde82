import Foundation
import Logging
import NIOCore
import NIOSSL
import SluiceProtocol

extension SluiceServer {
    /// TLS on the ingest listener, for devices whose connections cross the internet (DESIGN §5).
    ///
    /// Both files are PEM. They are read and checked by `SluiceServer.start()`, which fails with an error naming
    /// the file and what is wrong with it.
    public struct TLS: Sendable, Equatable {
        /// The server's certificate, followed by any intermediate CA certificates clients need to reach their root.
        public var certificateChainPath: String
        /// The certificate's private key, unencrypted (PKCS#8 `BEGIN PRIVATE KEY`, or RSA/EC).
        public var privateKeyPath: String

        public init(certificateChainPath: String, privateKeyPath: String) {
            self.certificateChainPath = certificateChainPath
            self.privateKeyPath = privateKeyPath
        }

        /// Reads both files and checks that they make a usable server identity, without starting anything
        /// (`sluiced --check-config`). Blocking file I/O.
        public func validate() throws {
            _ = try ServerTLS.load(self)
        }
    }
}

/// A TLS setting that cannot work; `description` names the file and the reason.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Builds the listener's TLS context and the handlers that put it in front of a connection.
enum ServerTLS {
    struct Loaded: Sendable {
        var context: NIOSSLContext
        var certificatePath: String
        /// When the server's own certificate (the first in the chain) expires.
        var notValidAfter: Date

        /// An expired certificate still starts the listener (it may be replaced any minute), but every client
        /// will refuse it: say so loudly.
        func warnIfExpired(logger: Logger) {
            guard notValidAfter < Date() else { return }
            logger.error(
                "the TLS certificate has expired: clients will refuse it",
                metadata: ["certificate": "\(certificatePath)", "expired": "\(notValidAfter)"])
        }
    }

    /// Reads and checks the certificate chain and key, and builds the context. Blocking file I/O (and
    /// BoringSSL set-up): call it from a thread that may block, not an event loop or the cooperative pool.
    static func load(_ tls: SluiceServer.TLS) throws -> Loaded {
        let certPath = tls.certificateChainPath
        let keyPath = tls.privateKeyPath
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(try readFile(certPath, what: "TLS certificate file"))
        } catch let error as TLSSetupError {
            throw error
        } catch {
            throw TLSSetupError(
                "TLS certificate file \(certPath) holds no readable PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        }
        guard let leaf = chain.first else {
            throw TLSSetupError("TLS certificate file \(certPath) holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: try readFile(keyPath, what: "TLS private key file"), format: .pem)
        } catch let error as TLSSetupError {
            throw error
        } catch {
            throw TLSSetupError(
                "TLS private key file \(keyPath) holds no readable PEM private key (expected -----BEGIN PRIVATE KEY-----, unencrypted)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch NIOSSLError.failedToLoadPrivateKey {
            // BoringSSL compares the key with the certificate's public key as the context is built.
            throw TLSSetupError("TLS private key file \(keyPath) does not belong to the certificate in \(certPath)")
        } catch {
            throw TLSSetupError("TLS certificate \(certPath) and private key \(keyPath) cannot be used together: \(error)")
        }
        return Loaded(context: context, certificatePath: certPath, notValidAfter: Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter)))
    }

    private static func readFile(_ path: String, what: String) throws -> [UInt8] {
        let data = try PEMFile.read(path, what: what).mapError { TLSSetupError($0.description) }.get()
        guard !data.isEmpty else { throw TLSSetupError("\(what) \(path) is empty") }
        return data
    }

    /// The handlers that go first in an ingest connection's pipeline when TLS is on.
    static func channelHandlers(_ context: NIOSSLContext, logger: Logger, peer: String) -> [any ChannelHandler] {
        var logger = logger
        logger[metadataKey: "peer"] = "\(peer)"
        return [
            PlaintextRefusalHandler(logger: logger),
            NIOSSLServerHandler(context: context),
            TLSFailureHandler(logger: logger),
        ]
    }
}

/// Answers a sluice client that connects to the TLS listener without TLS.
///
/// A TLS client's first byte is 0x16 (a handshake record); a sluice client's is the "S" of its "SLU1" preface.
/// Such a client would get a TLS alert it cannot read, so it gets a plaintext `Error` frame saying what to do
/// instead, and the connection is closed. Anything else goes on to the TLS handler, which fails the
/// handshake if it is not TLS. Either way the mistake costs only that connection.
final class PlaintextRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let message =
        "this listener speaks TLS only: connect with TLS (sluice --tls or --tls-ca FILE; SluiceClientConfiguration.tls); libsluice speaks plain TCP, so put a TLS terminator such as stunnel in front of it"

    private let logger: Logger
    private var refused = false

    init(logger: Logger) {
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        guard first == sluicePreface[0] else {
            // Not a plaintext sluice client: from here on the TLS handler alone sees the bytes. (Forward first:
            // a removed handler's context no longer leads anywhere.)
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        refused = true
        logger.info("plaintext client on the TLS listener: told to use TLS, closing the connection")
        var out = context.channel.allocator.buffer(capacity: 256)
        try? FramePayload.encode(
            ServerFrame.error(WireError(.failedPrecondition, Self.message), closing: true), into: &out)
        // This handler sits before the TLS handler, so the frame goes out as plain bytes.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(out), promise: written)
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }
}

@available(*, unavailable)
extension PlaintextRefusalHandler: Sendable {}

/// Logs a failed TLS handshake (a client that does not speak TLS, or does not trust the certificate) at info,
/// closes that connection, and keeps the error from the session handler, which would only log it at debug.
final class TLSFailureHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOSSLError.handshakeFailed(let underlying):
            let reasons = TLSReasonCodes.codes(in: "\(underlying)")
            if "\(underlying)".contains("EOF during handshake") {
                // A peer that connects and leaves (a port probe, a health check): not worth an info line.
                logger.debug("TLS handshake abandoned by the client")
            } else {
                logger.info(
                    "TLS handshake failed, closing the connection",
                    metadata: ["reason": "\(TLSReasons.explain(reasons))"])
            }
            context.close(promise: nil)
        case NIOSSLError.uncleanShutdown:
            // The client closed TCP without a TLS close_notify (it crashed or lost its link); the session
            // handler sees the close as usual.
            logger.debug("TLS connection closed without close_notify")
        case let ssl as NIOSSLError:
            logger.info("TLS error, closing the connection", metadata: ["error": "\(ssl)"])
            context.close(promise: nil)
        case let boring as BoringSSLError:
            logger.info(
                "TLS error, closing the connection",
                metadata: ["reason": "\(TLSReasons.explain(TLSReasonCodes.codes(in: "\(boring)")))"])
            context.close(promise: nil)
        default:
            context.fireErrorCaught(error)
        }
    }
}

@available(*, unavailable)
extension TLSFailureHandler: Sendable {}

/// BoringSSL's reason names (see `TLSReasonCodes`), with a word for operators on the common ones.
enum TLSReasons {
    static func explain(_ codes: [String]) -> String {
        let joined = codes.isEmpty ? "unknown reason" : codes.joined(separator: ", ")
        if codes.contains(where: { ["WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL"].contains($0) }) {
            return "the client does not speak TLS (\(joined))"
        }
        if codes.contains(where: { $0.hasPrefix("TLSV1_ALERT_UNKNOWN_CA") || $0.hasPrefix("SSLV3_ALERT_BAD_CERTIFICATE")
            || $0.hasPrefix("SSLV3_ALERT_CERTIFICATE_UNKNOWN") || $0.hasPrefix("TLSV1_ALERT_DECRYPT_ERROR") })
        {
            return "the client does not trust this server's certificate (\(joined)): give it the CA that signed it"
        }
        if codes.contains(where: { $0.contains("NO_SHARED_CIPHER") || $0.contains("UNSUPPORTED_PROTOCOL") || $0.contains("PROTOCOL_VERSION") }) {
            return "the client's TLS version or ciphers are not accepted, TLS 1.2 or newer is required (\(joined))"
        }
        return joined
    }
}
