/// What a PostgreSQL error says about the batch that met it — the one decision that keeps a producer's seqs
/// in order (DESIGN §2, Delivery): a batch is never "failed and skipped".
///
/// - `aboutTheData`: PostgreSQL refused a value (class 22), a constraint (class 23) or a trigger (P0, e.g.
///   `RAISE EXCEPTION`) refused a row. Only the row is at fault: it is isolated and dead-lettered with this
///   reason, and the rest of the group commits.
/// - `notAboutTheData`: everything else — the connection, a read-only primary after a failover, an operator
///   shutting the server down, a lock timeout, a deadlock, a full disk, a revoked permission, a dropped table,
///   an internal error, or no SQLSTATE at all because the connection broke. No row is at fault, so the writer
///   keeps the group and retries it (backing off) until it commits; dead-lettering or failing anything here
///   would lose or misfile readings that are fine.
///
/// Codes not listed are `notAboutTheData` too: retrying an unknown condition for ever is visible (the pool
/// reports the stall) and loses nothing; treating it as bad data would dead-letter good readings.
enum SQLStateClass: Equatable, Sendable {
    case aboutTheData
    case notAboutTheData

    init(sqlState: String?, connectionBroken: Bool) {
        guard !connectionBroken, let state = sqlState, state.utf8.count == 5 else {
            self = .notAboutTheData
            return
        }
        switch state.prefix(2) {
        case "22",  // data exception: out of range, invalid byte sequence, bad text representation
            "23",  // integrity constraint: CHECK, NOT NULL, UNIQUE, FOREIGN KEY, EXCLUSION
            "P0":  // PL/pgSQL: P0001 raise_exception (a trigger refusing the row), P0002, P0003, P0004
            self = .aboutTheData
        default:
            self = .notAboutTheData
        }
    }

    init(_ error: PGError) {
        self.init(sqlState: error.sqlState, connectionBroken: error.connectionBroken)
    }

    /// The label a writer error is counted under (`sluice_writer_errors_by_class_total{class=…}`): the
    /// SQLSTATE's two-character class ("08", "25", "53", "57"…), or "connection" when PostgreSQL gave none
    /// (libpq could not connect, or the connection broke before an answer).
    static func metricLabel(of error: any Error) -> String {
        guard let sqlState = sqlState(of: error), sqlState.utf8.count == 5 else { return "connection" }
        return String(sqlState.prefix(2))
    }

    private static func sqlState(of error: any Error) -> String? {
        switch error {
        case let error as PGError: return error.sqlState
        case let error as GroupCommit.StallError: return error.sqlState
        default: return nil
        }
    }

    /// A short name for what a `notAboutTheData` SQLSTATE means, for the stall reason in `/status` and logs.
    static func explanation(of sqlState: String?) -> String {
        guard let state = sqlState, state.utf8.count == 5 else { return "connection to PostgreSQL lost" }
        switch state {
        case "25006": return "database is read-only (a demoted primary after a failover?)"
        case "57P01", "57P02": return "PostgreSQL is shutting down"
        case "57P03": return "PostgreSQL is starting up or cannot accept connections now"
        case "55P03": return "lock timeout"
        case "42501": return "permission denied"
        case "42P01": return "table missing"
        case "57014": return "statement canceled"
        default: break
        }
        switch state.prefix(2) {
        case "08": return "connection failure"
        case "40": return "transaction rolled back (deadlock or serialization failure)"
        case "53": return "insufficient resources (disk full, out of memory or too many connections)"
        case "58": return "system error (I/O)"
        case "XX": return "internal error in PostgreSQL"
        case "22", "23", "P0": return "data refused outside the readings COPY"
        default: return "PostgreSQL error"
        }
    }
}
