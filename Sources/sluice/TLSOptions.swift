import ArgumentParser
import Foundation
import SluiceClient

/// TLS to sluiced, for the commands that speak the ingest protocol (send, replay, bench).
struct TLSOptions: ParsableArguments {
    @Flag(name: .customLong("tls"), help: "Connect with TLS, trusting the system's CAs (or only --tls-ca's).")
    var enabled = false

    @Option(
        name: .customLong("tls-ca"),
        help: ArgumentHelp(
            "PEM file of the CA that signed sluiced's certificate, trusted instead of the system's CAs; implies --tls (default: $SLUICE_TLS_CA).",
            valueName: "pem"))
    var caFile: String?

    @Option(
        name: .customLong("tls-server-name"),
        help: ArgumentHelp(
            "Name sluiced's certificate must carry (default: the --server host); implies --tls.", valueName: "name"))
    var serverName: String?

    /// `--tls-ca`, else `$SLUICE_TLS_CA` (ignored when empty).
    private var resolvedCAFile: (path: String, origin: String)? {
        if let caFile { return (caFile, "--tls-ca") }
        if let env = ProcessEnvironment.get("SLUICE_TLS_CA"), !env.isEmpty { return (env, "$SLUICE_TLS_CA") }
        return nil
    }

    /// nil = plain TCP.
    var configuration: ClientTLS? {
        let ca = resolvedCAFile
        guard enabled || ca != nil || serverName != nil else { return nil }
        return ClientTLS(trust: ca.map { .caFile($0.path) } ?? .systemRoots, serverName: serverName)
    }

    func validate() throws {
        if let ca = resolvedCAFile, !FileManager.default.fileExists(atPath: ca.path) {
            throw ValidationError("\(ca.origin) \(ca.path): no such file (the PEM file of the CA that signed sluiced's certificate)")
        }
        if let serverName, serverName.isEmpty { throw ValidationError("--tls-server-name cannot be empty") }
    }
}
