/// The pieces of PostgreSQL's binary COPY format that every table's encoder shares.
/// See https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format".
enum CopyBinaryFormat {
    /// Signature `PGCOPY\n\377\r\n\0`, then int32 flags (0: no OIDs) and int32 header-extension length (0).
    static let header: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00] + [0, 0, 0, 0] + [0, 0, 0, 0]

    /// A field count of -1 ends the data.
    static let trailer: [UInt8] = [0xFF, 0xFF]

    /// Unix epoch minus PostgreSQL's epoch (2000-01-01 00:00:00 UTC), in microseconds.
    static let postgresEpochOffsetMicros: Int64 = 946_684_800_000_000

    /// Unix microseconds as PostgreSQL's timestamptz: microseconds since 2000-01-01 UTC.
    ///
    /// Int64.min and Int64.max mean -infinity and +infinity to PostgreSQL, and a subtraction that overflows
    /// would wrap to a plausible date; both cases become Int64.min + 1, which PostgreSQL refuses as
    /// "timestamp out of range", so a nonsense time fails its batch instead of being stored as something else.
    @inline(__always)
    static func postgresTime(unixMicros: Int64) -> Int64 {
        let (shifted, overflow) = unixMicros.subtractingReportingOverflow(postgresEpochOffsetMicros)
        return overflow || shifted == .min ? .min + 1 : shifted
    }

    /// Appends one text field (int32 length, then the UTF-8 bytes), or NULL (length -1) for nil.
    @inline(__always)
    static func appendText(_ text: String?, to buffer: CopyBuffer) {
        guard var text else {
            buffer.append(int32: -1)
            return
        }
        text.withUTF8 { utf8 in
            buffer.append(int32: Int32(truncatingIfNeeded: utf8.count))
            buffer.append(bytes: UnsafeRawBufferPointer(utf8))
        }
    }
}
