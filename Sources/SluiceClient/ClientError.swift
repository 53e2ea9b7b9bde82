import SluiceProtocol

/// What went wrong in the client, and what to do about it. `description` is a sentence a person can act on.
public enum ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An endpoint could not be parsed.
    case invalidEndpoint(String, String)
    /// The server refused the token. Retrying cannot help.
    case unauthenticated(String)
    /// The token may not write what was sent. Retrying cannot help.
    case permissionDenied(String)
    /// The server does not speak this client's protocol version or feature.
    case unsupported(String)
    /// The producer state file could not be read or written.
    case stateFile(path: String, reason: String)
    /// The spool directory could not be opened, locked, read or written.
    case spool(directory: String, reason: String)
    /// `flush` or `close` gave up waiting: this much was still not acknowledged.
    case flushTimedOut(unackedReadings: Int, unackedBatches: Int, lastProblem: String?)
    /// The client was closed; create a new one to send more.
    case closed
    /// A reading or batch the client refuses before sending (e.g. a single series larger than any frame).
    case invalidInput(String)
    /// The server reported an error frame (non-fatal ones also appear as events).
    case server(code: String, message: String, seq: UInt64)
    /// A connection attempt or session failed; the client retries by itself (reported as an event).
    case connection(endpoint: String, reason: String)
    /// The TLS setting cannot be used (e.g. the CA file is missing or holds no certificate).
    case tlsSetup(String)
    /// TLS with a server failed in a way retrying cannot fix: its certificate is not trusted, or it does not
    /// speak TLS.
    case tls(endpoint: String, reason: String)

    public var description: String {
        switch self {
        case .invalidEndpoint(let text, let why):
            "invalid server address \"\(text)\": \(why)"
        case .unauthenticated(let message):
            "the server refused the token (\(message)): pass the producer's token with --token or SLUICE_TOKEN"
        case .permissionDenied(let message):
            "the server does not allow this producer to write what was sent (\(message)): check the token's device prefix"
        case .unsupported(let message):
            "the server does not support this client (\(message)): upgrade sluice or sluiced so both speak protocol v\(sluiceProtocolVersion)"
        case .stateFile(let path, let reason):
            "producer state file \(path): \(reason)"
        case .spool(let directory, let reason):
            "spool \(directory): \(reason)"
        case .flushTimedOut(let readings, let batches, let last):
            "gave up waiting: \(readings) readings in \(batches) batches are not acknowledged"
                + (last.map { " (last problem: \($0))" } ?? "")
                + "; they may or may not have been written. The client keeps resending them while it stays open, so "
                + "flush again rather than close; readings sent again later get new seqs and are written twice if "
                + "these did commit (compare the producer's committed_seq in PostgreSQL first)"
        case .closed:
            "the client is closed; create a new SluiceClient to send more"
        case .invalidInput(let message):
            message
        case .server(let code, let message, let seq):
            "server error \(code)\(seq == 0 ? "" : " for batch \(seq)"): \(message)"
        case .connection(let endpoint, let reason):
            "connection to \(endpoint) failed: \(reason); retrying"
        case .tlsSetup(let message):
            message
        case .tls(let endpoint, let reason):
            "TLS with \(endpoint) failed: \(reason)"
        }
    }
}
