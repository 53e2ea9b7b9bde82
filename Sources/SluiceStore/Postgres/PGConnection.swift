import Foundation
import CLibPQ

/// One blocking libpq connection. Not Sendable: it is created, used and closed on the one thread that owns
/// it (a writer thread or a `StatefulWorker`), never on a NIO event loop or the cooperative pool.
final class PGConnection {
    private let handle: OpaquePointer

    /// Connects to `url` (a libpq URL or key=value string). Defaults that keep a writer from hanging on a dead
    /// peer come first, so settings in `url` override them.
    init(url: String, applicationName: String) throws {
        let settings: [(String, String)] = [
            ("connect_timeout", "10"),
            ("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"),
            ("keepalives_count", "3"),
            ("application_name", applicationName),
            ("dbname", url),  // expanded: the URL's own settings win over the defaults above
        ]
        let keywords = settings.map { strdup($0.0) }
        let values = settings.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
        var valuePointers = values.map { UnsafePointer($0) } + [nil]
        guard let handle = PQconnectdbParams(&keywordPointers, &valuePointers, 1) else {
            throw StoreError.unreachable("libpq could not allocate a connection")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.trimmed(String(cString: PQerrorMessage(handle)))
            PQfinish(handle)
            throw StoreError.unreachable("cannot connect to \(Self.redacted(url)): \(message)")
        }
        self.handle = handle
        // Notices ("relation already exists, skipping", shutdown warnings) would go to stderr; the writer
        // reports what matters through its logger and errors instead.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        // Timestamps in text results and partition bounds are read and written in UTC.
        try execute("SET TIME ZONE 'UTC'")
    }

    deinit { PQfinish(handle) }

    /// False once the server closed the connection or the socket failed.
    var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Runs `sql` (one or several statements, simple protocol) and fails on any error.
    func execute(_ sql: String) throws {
        _ = try query(sql)
    }

    /// Runs `sql` and returns the last statement's rows as text, nil for NULL. A multi-statement string
    /// stops at the first error, which is what is reported.
    @discardableResult
    func query(_ sql: String) throws -> [[String?]] {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result, expecting: [PGRES_COMMAND_OK, PGRES_TUPLES_OK])
        return Self.rows(of: result)
    }

    /// Runs one statement with text parameters ($1, $2, ...) and returns its rows as text.
    @discardableResult
    func query(_ sql: String, parameters: [String?]) throws -> [[String?]] {
        let copies = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { copies.forEach { free($0) } }
        var pointers = copies.map { UnsafePointer($0) }
        let result = PQexecParams(handle, sql, Int32(parameters.count), nil, &pointers, nil, nil, 0)
        defer { PQclear(result) }
        try check(result, expecting: [PGRES_COMMAND_OK, PGRES_TUPLES_OK])
        return Self.rows(of: result)
    }

    /// The command tag of the last statement of `sql`, e.g. "COMMIT" or "ROLLBACK".
    func commandTag(_ sql: String) throws -> String {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result, expecting: [PGRES_COMMAND_OK, PGRES_TUPLES_OK])
        return String(cString: PQcmdStatus(result))
    }

    /// Runs a `COPY ... FROM STDIN` statement and lets `produce` stream the data through `send`; ends the
    /// copy and reports the server's verdict. If `produce` throws, the copy is aborted and the error rethrown.
    func copyIn(_ sql: String, produce: (CopySink) throws -> Void) throws {
        let start = PQexec(handle, sql)
        defer { PQclear(start) }
        try check(start, expecting: [PGRES_COPY_IN])
        try streamCopy(produce: produce)
    }

    /// Sends `sql` — statements ending with a `COPY ... FROM STDIN` — in one round trip, hands the rows of
    /// the last query before the COPY to `produce` together with `send`, then ends the copy. Saves the round
    /// trip a separate statement before the COPY would cost.
    func copyIn(
        after sql: String,
        produce: (_ rowsBefore: [[String?]], CopySink) throws -> Void
    ) throws {
        guard PQsendQuery(handle, sql) == 1 else { throw connectionError() }
        var rows: [[String?]] = []
        var failure: (any Error)?
        while let result = PQgetResult(handle) {
            let status = PQresultStatus(result)
            if status == PGRES_COPY_IN {
                PQclear(result)
                if let failure {  // cannot happen: an error ends the statements before the COPY
                    _ = PQputCopyEnd(handle, "aborted by the writer")
                    drainResults()
                    throw failure
                }
                return try streamCopy { sink in try produce(rows, sink) }
            }
            if status == PGRES_TUPLES_OK {
                rows = Self.rows(of: result)
            } else if status != PGRES_COMMAND_OK && failure == nil {
                failure = resultError(result)
            }
            PQclear(result)
        }
        throw failure ?? connectionError()
    }

    /// Where COPY data goes while a copy is open.
    struct CopySink {
        fileprivate let connection: PGConnection

        /// Hands `bytes` to libpq (which sends them, blocking this thread if the socket is full), in pieces
        /// of at most 256 MiB: PQputCopyData takes an int32 length, so one call of 2 GiB or more would trap.
        func send(_ bytes: UnsafeRawBufferPointer) throws {
            var offset = 0
            while offset < bytes.count {
                let size = min(bytes.count - offset, Self.maxPiece)
                let sent = PQputCopyData(
                    connection.handle, (bytes.baseAddress! + offset).assumingMemoryBound(to: CChar.self), Int32(size))
                if sent != 1 { throw connection.connectionError() }
                offset += size
            }
        }

        static let maxPiece = 256 << 20
    }

    private func streamCopy(produce: (CopySink) throws -> Void) throws {
        do {
            try produce(CopySink(connection: self))
        } catch {
            _ = PQputCopyEnd(handle, "aborted by the writer")
            drainResults()
            throw error
        }
        guard PQputCopyEnd(handle, nil) == 1 else { throw connectionError() }
        var failure: (any Error)?
        while let result = PQgetResult(handle) {
            if failure == nil {
                do { try check(result, expecting: [PGRES_COMMAND_OK]) } catch { failure = error }
            }
            PQclear(result)
        }
        if let failure { throw failure }
    }

    /// Escapes `text` as a SQL string literal (quotes included) for the connection's encoding.
    func literal(_ text: String) throws -> String {
        guard let escaped = PQescapeLiteral(handle, text, text.utf8.count) else { throw connectionError() }
        defer { PQfreemem(escaped) }
        return String(cString: escaped)
    }

    // MARK: - Errors

    private func check(_ result: OpaquePointer?, expecting statuses: [ExecStatusType]) throws {
        guard let result else { throw connectionError() }
        let status = PQresultStatus(result)
        guard statuses.contains(status) else {
            if status == PGRES_COPY_IN {  // unexpected copy state: leave it so the connection stays usable
                _ = PQputCopyEnd(handle, "unexpected COPY")
                drainResults()
            }
            throw resultError(result)
        }
    }

    private func resultError(_ result: OpaquePointer) -> PGError {
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        var message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? ""
        if let detail = PQresultErrorField(result, Int32(UInt8(ascii: "D"))) {
            message += " (\(String(cString: detail)))"
        }
        if message.isEmpty { message = Self.trimmed(String(cString: PQresultErrorMessage(result))) }
        if message.isEmpty { message = Self.trimmed(String(cString: PQerrorMessage(handle))) }
        if message.isEmpty { message = "unexpected result \(String(cString: PQresStatus(PQresultStatus(result))))" }
        let context = PQresultErrorField(result, Int32(UInt8(ascii: "W"))).map { String(cString: $0) }
        return PGError(sqlState: state, message: message, connectionBroken: !isHealthy, context: context)
    }

    private func connectionError() -> PGError {
        let message = Self.trimmed(String(cString: PQerrorMessage(handle)))
        return PGError(
            sqlState: nil, message: message.isEmpty ? "connection to PostgreSQL lost" : message,
            connectionBroken: true)
    }

    private func drainResults() {
        while let result = PQgetResult(handle) { PQclear(result) }
    }

    // MARK: - Helpers

    private static func rows(of result: OpaquePointer?) -> [[String?]] {
        guard let result, PQresultStatus(result) == PGRES_TUPLES_OK else { return [] }
        var rows: [[String?]] = []
        let columns = PQnfields(result)
        for row in 0..<PQntuples(result) {
            var values: [String?] = []
            values.reserveCapacity(Int(columns))
            for column in 0..<columns {
                values.append(
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column)))
            }
            rows.append(values)
        }
        return rows
    }

    static func trimmed(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ").trimmingCharacters(in: .whitespaces)
    }

    /// The URL with any password replaced, for error messages and logs.
    static func redacted(_ url: String) -> String {
        // postgresql://user:secret@host/db → postgresql://user:***@host/db
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else {
            return url.replacingOccurrences(of: #"password=\S+"#, with: "password=***", options: .regularExpression)
        }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }
}
