/// A failure reported by libpq or PostgreSQL, with what the writer needs to decide between retrying and
/// failing a batch.
struct PGError: Error, CustomStringConvertible {
    /// PostgreSQL's SQLSTATE, nil when the failure happened on the client side (e.g. the socket closed).
    var sqlState: String?
    var message: String
    /// The connection is unusable afterwards (libpq reports CONNECTION_BAD).
    var connectionBroken: Bool

    var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }

    /// True when running the same transaction again, possibly on a new connection, can succeed: the
    /// connection broke, the server is shutting down or starting, resources ran short, or the transaction
    /// lost a serialization/deadlock race. Anything else (bad data, missing table) is permanent for the
    /// statements that caused it.
    var isTransient: Bool {
        if connectionBroken { return true }
        guard let state = sqlState, state.count == 5 else { return true }  // client-side: lost connection
        switch state.prefix(2) {
        case "08",  // connection exception
            "40",  // transaction rollback: serialization failure, deadlock
            "53",  // insufficient resources: disk full, out of memory, too many connections
            "57",  // operator intervention: admin/crash shutdown, cannot connect now, query canceled
            "58":  // system error (I/O)
            return true
        case "55":  // object not in prerequisite state: lock not available, object in use
            return state == "55P03" || state == "55006"
        default:
            return false
        }
    }

    var storeError: StoreError { .query(sqlState: sqlState, message: message) }
}
