/// A failure reported by libpq or PostgreSQL, with what the writer needs to decide between retrying the
/// group and isolating a row (`SQLStateClass`).
struct PGError: Error, CustomStringConvertible {
    /// PostgreSQL's SQLSTATE, nil when the failure happened on the client side (e.g. the socket closed).
    var sqlState: String?
    var message: String
    /// The connection is unusable afterwards (libpq reports CONNECTION_BAD).
    var connectionBroken: Bool
    /// PostgreSQL's error context (PG_DIAG_CONTEXT), e.g. "COPY readings, line 3, column time" or a
    /// trigger's "PL/pgSQL function f() line 4 at RAISE" followed by the COPY line.
    var context: String? = nil

    var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }

    var classification: SQLStateClass { SQLStateClass(self) }

    /// The 1-based row of `COPY <table>` the error happened at, from the context; nil if it names none.
    func copyLine(table: String) -> Int? {
        guard let context else { return nil }
        let marker = "COPY \(table), line "
        guard let range = context.range(of: marker) else { return nil }
        let digits = context[range.upperBound...].prefix { $0.isASCII && $0.isNumber }
        return Int(digits)
    }

    var storeError: StoreError { .query(sqlState: sqlState, message: message) }
}
