import Testing

@testable import SluiceStore

/// The pure decisions behind "never failed and skipped": which errors are about the data, how a refused
/// COPY is split, where a COPY line points, and how dead letters are kept storable.
@Suite struct RefusalLogicTests {
    @Test(arguments: [
        // The data: isolate the row.
        ("22003", SQLStateClass.aboutTheData), ("22008", .aboutTheData), ("22021", .aboutTheData),
        ("22P02", .aboutTheData), ("23514", .aboutTheData), ("23502", .aboutTheData), ("23505", .aboutTheData),
        ("P0001", .aboutTheData), ("P0004", .aboutTheData),
        // Not the data: keep the group and retry.
        ("08006", .notAboutTheData), ("08003", .notAboutTheData), ("25006", .notAboutTheData),
        ("57P01", .notAboutTheData), ("57P02", .notAboutTheData), ("57P03", .notAboutTheData),
        ("55P03", .notAboutTheData), ("40001", .notAboutTheData), ("40P01", .notAboutTheData),
        ("53100", .notAboutTheData), ("53200", .notAboutTheData), ("53300", .notAboutTheData),
        ("42501", .notAboutTheData), ("42P01", .notAboutTheData), ("XX000", .notAboutTheData),
        ("XX001", .notAboutTheData), ("58030", .notAboutTheData), ("57014", .notAboutTheData),
        ("42703", .notAboutTheData), ("0A000", .notAboutTheData), ("", .notAboutTheData), ("2", .notAboutTheData),
    ])
    func sqlStatesAreClassified(state: String, expected: SQLStateClass) {
        #expect(SQLStateClass(sqlState: state, connectionBroken: false) == expected)
    }

    @Test func aBrokenConnectionOrNoSQLStateIsNeverAboutTheData() {
        #expect(SQLStateClass(sqlState: nil, connectionBroken: false) == .notAboutTheData)
        #expect(SQLStateClass(sqlState: "23514", connectionBroken: true) == .notAboutTheData)
        #expect(SQLStateClass.explanation(of: nil).contains("connection"))
        #expect(SQLStateClass.explanation(of: "25006").contains("read-only"))
        #expect(SQLStateClass.explanation(of: "53100").contains("disk full"))
    }

    @Test func theCopyLineIsReadFromTheErrorContext() {
        func error(_ context: String?) -> PGError {
            PGError(sqlState: "23514", message: "m", connectionBroken: false, context: context)
        }
        #expect(error("COPY readings, line 17, column value").copyLine(table: "readings") == 17)
        #expect(error("COPY readings, line 3").copyLine(table: "readings") == 3)
        #expect(error("PL/pgSQL function refuse() line 4 at RAISE\nCOPY readings, line 250").copyLine(table: "readings") == 250)
        #expect(error("COPY dead_letters, line 2").copyLine(table: "readings") == nil)
        #expect(error("PL/pgSQL function refuse() line 4 at RAISE").copyLine(table: "readings") == nil)
        #expect(error(nil).copyLine(table: "readings") == nil)
    }

    @Test func aNamedLineIsRefusedAndTheRowsAroundItAreTriedAgain() {
        #expect(RowIsolation.split(10..<20, line: 1) == .refuse(row: 10, then: [11..<20]))
        #expect(RowIsolation.split(10..<20, line: 4) == .refuse(row: 13, then: [10..<13, 14..<20]))
        #expect(RowIsolation.split(10..<20, line: 10) == .refuse(row: 19, then: [10..<19]))
        #expect(RowIsolation.split(5..<6, line: 1) == .refuse(row: 5, then: []))
    }

    @Test func withoutALineTheSegmentIsHalvedDownToOneRow() {
        #expect(RowIsolation.split(0..<10, line: nil) == .bisect([0..<5, 5..<10]))
        #expect(RowIsolation.split(0..<10, line: 11) == .bisect([0..<5, 5..<10]), "a line outside is no line")
        #expect(RowIsolation.split(0..<10, line: 0) == .bisect([0..<5, 5..<10]))
        #expect(RowIsolation.split(7..<8, line: nil) == .refuse(row: 7, then: []))
    }

    /// Simulates PostgreSQL refusing a set of rows (naming the first or no line) and checks isolation finds
    /// exactly them within the bound, whatever the pattern.
    @Test(arguments: [true, false])
    func isolationFindsExactlyTheRefusedRowsWithinItsBound(namesLine: Bool) {
        var random = SplitMix(seed: namesLine ? 7 : 8)
        for _ in 0..<200 {
            let total = Int(random.next() % 300) + 1
            let bad = Set((0..<total).filter { _ in random.next() % 7 == 0 })
            var refused = Set<Int>()
            var pending = RowIsolation.segments(total: total, excluding: []).reversed() as [Range<Int>]
            var rounds = 0
            while let segment = pending.popLast() {
                rounds += 1
                guard let first = segment.first(where: bad.contains) else { continue }
                switch RowIsolation.split(segment, line: namesLine ? first - segment.lowerBound + 1 : nil) {
                case .refuse(let row, let then):
                    refused.insert(row)
                    pending.append(contentsOf: then.reversed())
                case .bisect(let halves):
                    pending.append(contentsOf: halves.reversed())
                }
            }
            #expect(refused == bad)
            #expect(rounds <= RowIsolation.maxRounds(rows: total))
        }
    }

    @Test func segmentsSkipRowsAlreadyRefused() {
        #expect(RowIsolation.segments(total: 10, excluding: []) == [0..<10])
        #expect(RowIsolation.segments(total: 10, excluding: [0, 4, 5, 9]) == [1..<4, 6..<9])
        #expect(RowIsolation.segments(total: 0, excluding: []) == [])
        #expect(RowIsolation.segments(total: 2, excluding: [0, 1]) == [])
    }

    @Test func groupRowsMapCopyPositionsBackToBatchSeriesAndReading() {
        // Batch 1 is a duplicate (not written); empty series take no rows.
        let rows = GroupRows(seriesCounts: [[3, 0, 2], [5], [1, 4]], isNew: [true, false, true])
        #expect(rows.total == 10)
        #expect(rows.key(of: 0) == .init(batch: 0, series: 0, index: 0))
        #expect(rows.key(of: 3) == .init(batch: 0, series: 2, index: 0))
        #expect(rows.key(of: 5) == .init(batch: 2, series: 0, index: 0))
        #expect(rows.key(of: 9) == .init(batch: 2, series: 1, index: 3))
        #expect(rows.row(of: .init(batch: 2, series: 1, index: 3)) == 9)
        #expect(rows.row(of: .init(batch: 1, series: 0, index: 0)) == nil)
        let pieces = rows.pieces(of: 2..<7).map { ($0.span.batch, $0.span.series, $0.rows) }
        #expect(pieces.map(\.0) == [0, 0, 2, 2] && pieces.map(\.1) == [0, 2, 0, 1])
        #expect(pieces.map(\.2) == [2..<3, 0..<2, 0..<1, 0..<1])
    }

    @Test func longIdentifiersAreStoredAsPrefixLengthAndHash() {
        let short = String(repeating: "a", count: 64)
        #expect(DeadLetterText.identifier(short) == short)
        let long = String(repeating: "é", count: 40_000)  // 80,000 bytes
        let stored = DeadLetterText.identifier(long)
        #expect(stored.utf8.count <= 64)
        #expect(stored.hasPrefix("éé") && stored.contains("80000 B") && stored.contains("fnv1a64"))
        #expect(DeadLetterText.identifier(long + "x") != stored, "the hash tells long ids apart")
        #expect(DeadLetterText.identifier("a\0b") == "a\u{FFFD}b")
        #expect(DeadLetterText.reason(String(repeating: "r", count: 10_000)).utf8.count <= DeadLetterText.maxReasonBytes)
        #expect(DeadLetterText.minimal("x").hasPrefix("h:1:"))
    }
}

/// A small deterministic generator (the tests' own, so the walk is the same on every run).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
