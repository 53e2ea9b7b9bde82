/// The exactly-once decision for one group of batches, as plain values.
///
/// Each producer's batches reach its writer in seq order, so the dedup state is a single high-water mark
/// per producer: a batch is new iff its seq is above everything committed for that producer, counting the
/// batches of this same group that come before it.
struct GroupPlan: Equatable {
    /// For each batch of the group, in order: true = write it, false = duplicate.
    var isNew: [Bool]
    /// The high-water marks to store for producers that advanced.
    var advanced: [ProducerID: UInt64]

    init(batches: [(producer: ProducerID, seq: UInt64)], committed: [ProducerID: UInt64]) {
        var marks = committed
        var advanced: [ProducerID: UInt64] = [:]
        isNew = batches.map { batch in
            let mark = marks[batch.producer] ?? 0
            guard batch.seq > mark else { return false }
            marks[batch.producer] = batch.seq
            advanced[batch.producer] = batch.seq
            return true
        }
        self.advanced = advanced
    }
}
