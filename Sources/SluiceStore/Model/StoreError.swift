/// Errors thrown by SluiceStore's public API; each says what failed and, where it helps, what to do.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    /// PostgreSQL could not be reached or refused the connection (the libpq message is included).
    case unreachable(String)
    /// A statement failed; `sqlState` is PostgreSQL's five-character error code when it sent one.
    case query(sqlState: String?, message: String)
    /// The object was already shut down or stopped.
    case closed(String)
    /// A local PostgreSQL cluster could not be created, started or stopped.
    case cluster(String)
    /// Bad input handed to the store.
    case invalidArgument(String)
    /// The database's schema was migrated by a newer sluiced than this one: running would write rows a
    /// schema it does not know may not accept as it expects.
    case schemaTooNew(found: Int, known: Int)

    public var description: String {
        switch self {
        case .unreachable(let message): "PostgreSQL unreachable: \(message)"
        case .query(let state, let message): "PostgreSQL error\(state.map { " \($0)" } ?? ""): \(message)"
        case .closed(let message): message
        case .cluster(let message): message
        case .invalidArgument(let message): message
        case .schemaTooNew(let found, let known):
            "the database schema is at version \(found), newer than version \(known), the newest this sluiced "
                + "knows: a newer sluiced migrated it. Run that version (or newer) of sluiced; this one refuses to start"
        }
    }
}
