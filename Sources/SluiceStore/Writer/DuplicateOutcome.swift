/// The original outcome of batches found already committed, so that a resend's ack tells the same truth as
/// the first one did (DESIGN §2: "acked with duplicate = true and the counts of its original outcome").
///
/// What a batch left in `dead_letters` is exactly what it had rejected (validation and PostgreSQL's
/// refusals alike, written in its own transaction), so the count of its rows there, by the
/// (producer_id, seq) index, is its rejected count; the rest of its readings were accepted.
enum DuplicateOutcome {
    struct Key: Hashable {
        var producer: ProducerID
        var seq: UInt64
    }

    /// Dead letters per (producer, seq) among `batches`, in one query; batches with none are absent.
    static func deadLetterCounts(
        of batches: [(producer: ProducerID, seq: UInt64)], on connection: PGConnection
    ) throws -> [Key: Int] {
        guard !batches.isEmpty else { return [:] }
        let unique = Set(batches.map { Key(producer: $0.producer, seq: $0.seq) })
        let values = unique.map { "('\($0.producer)'::uuid, \(Int64(bitPattern: $0.seq))::int8)" }
        let rows = try connection.query(
            """
            SELECT producer_id, seq, count(*) FROM dead_letters
            WHERE (producer_id, seq) IN (VALUES \(values.joined(separator: ",")))
            GROUP BY producer_id, seq
            """)
        var counts: [Key: Int] = [:]
        for row in rows {
            guard let id = row[0].flatMap({ ProducerID(uuidString: $0) }), let seq = row[1].flatMap({ Int64($0) }),
                let count = row[2].flatMap({ Int($0) })
            else { continue }
            counts[Key(producer: id, seq: UInt64(bitPattern: seq))] = count
        }
        return counts
    }
}
