/// The rows a group's new batches send to `readings`, in COPY order: series after series, batch after batch.
///
/// PostgreSQL names a refused row by its line in the COPY stream ("COPY readings, line N"); this is the map
/// from such a position (0-based here: line N is row N − 1 of the segment that was sent) back to the batch,
/// series and reading it came from.
struct GroupRows {
    /// One series of one new batch: `count` rows starting at flat position `start`.
    struct Span: Equatable {
        /// Position of the batch in the group.
        var batch: Int
        var series: Int
        var start: Int
        var count: Int
    }

    /// A reading, named independently of which batches a given transaction finds new.
    struct Key: Hashable {
        var batch: Int
        var series: Int
        var index: Int
    }

    private(set) var spans: [Span] = []
    private(set) var total = 0

    /// `series[i]` is the row count of each series of the group's i-th batch; `isNew[i]` whether it is written.
    init(seriesCounts: [[Int]], isNew: [Bool]) {
        for (batch, counts) in seriesCounts.enumerated() where isNew[batch] {
            for (series, count) in counts.enumerated() where count > 0 {
                spans.append(Span(batch: batch, series: series, start: total, count: count))
                total += count
            }
        }
    }

    /// The reading at flat position `row` (0 ≤ row < total).
    func key(of row: Int) -> Key {
        precondition(row >= 0 && row < total, "row \(row) outside the group's \(total) rows")
        let span = spans[spanIndex(containing: row)]
        return Key(batch: span.batch, series: span.series, index: row - span.start)
    }

    /// The flat position of `key`, nil if its batch is not written in this transaction.
    func row(of key: Key) -> Int? {
        for span in spans where span.batch == key.batch && span.series == key.series {
            return key.index < span.count ? span.start + key.index : nil
        }
        return nil
    }

    /// The parts of `range` that fall in each series, in order: (span, rows within that series).
    func pieces(of range: Range<Int>) -> [(span: Span, rows: Range<Int>)] {
        guard !range.isEmpty else { return [] }
        var result: [(Span, Range<Int>)] = []
        var index = spanIndex(containing: range.lowerBound)
        while index < spans.count, spans[index].start < range.upperBound {
            let span = spans[index]
            let lower = max(range.lowerBound, span.start) - span.start
            let upper = min(range.upperBound, span.start + span.count) - span.start
            result.append((span, lower..<upper))
            index += 1
        }
        return result
    }

    private func spanIndex(containing row: Int) -> Int {
        var low = 0
        var high = spans.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if spans[middle].start <= row { low = middle } else { high = middle - 1 }
        }
        return low
    }
}

/// How a refused COPY segment is split for the next rounds of row isolation (pure, so it is unit-tested).
///
/// PostgreSQL stops a COPY at the first row it refuses and names it by line. That row is set aside; the rows
/// before it are sent again as a segment of their own (they were rolled back with the failed COPY, and a row
/// refused only at the end of the statement — an AFTER trigger — could be among them), then the rows after
/// it. Without a line the segment is halved; a single row without a line is itself the refused one. Every
/// round therefore sets aside a row or halves a segment: at most about 2 × rows rounds, and each row is sent
/// a few times, not once per refused row.
enum RowIsolation {
    enum Split: Equatable {
        /// The row at this flat position is refused; the segments replace the failed one, in order.
        case refuse(row: Int, then: [Range<Int>])
        /// No row named: try these halves.
        case bisect([Range<Int>])
    }

    /// What to do after `segment` failed with an error naming 1-based `line` (nil: none, or out of range).
    static func split(_ segment: Range<Int>, line: Int?) -> Split {
        if let line, line >= 1, line <= segment.count {
            let row = segment.lowerBound + line - 1
            return .refuse(row: row, then: [segment.lowerBound..<row, (row + 1)..<segment.upperBound].filter { !$0.isEmpty })
        }
        if segment.count == 1 { return .refuse(row: segment.lowerBound, then: []) }
        let middle = segment.lowerBound + segment.count / 2
        return .bisect([segment.lowerBound..<middle, middle..<segment.upperBound])
    }

    /// `0..<total` without the rows in `refused`, as the fewest segments.
    static func segments(total: Int, excluding refused: Set<Int>) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = 0
        for row in refused.sorted() where row >= start && row < total {
            if row > start { result.append(start..<row) }
            start = row + 1
        }
        if start < total { result.append(start..<total) }
        return result
    }

    /// A bound no correct isolation reaches (see above): past it the writer stops and retries the group
    /// as a stall instead of looping.
    static func maxRounds(rows: Int) -> Int { 4 * rows + 16 }
}
