import Testing

@testable import SluiceClient

@Suite struct TimestampParserTests {
    // 2024-05-01T12:00:00Z
    let noon: Int64 = 1_714_564_800_000_000

    func parse(_ s: String) -> Int64? { try? TimestampParser.parse(s).get() }

    @Test func rfc3339WithZoneFractionAndOffset() {
        #expect(parse("2024-05-01T12:00:00Z") == noon)
        #expect(parse("2024-05-01t12:00:00z") == noon)
        #expect(parse("2024-05-01 14:00:00+02:00") == noon)
        #expect(parse("2024-05-01T11:30:00-00:30") == noon)
        #expect(parse("2024-05-01T12:00:00.5Z") == noon + 500_000)
        #expect(parse("2024-05-01T12:00:00.123456789Z") == noon + 123_456)
        #expect(parse("1970-01-01T00:00:00Z") == 0)
        #expect(parse("2024-02-29T00:00:00Z") == 1_709_164_800_000_000)
    }

    @Test func unixTimeUnitsAreToldByMagnitude() {
        #expect(parse("1714564800") == noon)
        #expect(parse("1714564800.25") == noon + 250_000)
        #expect(parse("1714564800000") == noon)
        #expect(parse("1714564800000.5") == noon + 500)
        #expect(parse("1714564800000000") == noon)
        #expect(parse("1714564800000000000") == noon)
        #expect(parse("1.7145648e9") == noon)
    }

    @Test func badTimestampsSayWhatIsExpected() {
        for bad in ["yesterday", "2024-05-01", "2024-05-01T12:00:00", "2024-13-01T00:00:00Z", "2023-02-29T00:00:00Z",
            "12:00", "", "1714564800x"]
        {
            guard case .failure(let error) = TimestampParser.parse(bad) else {
                Issue.record("\(bad) parsed")
                continue
            }
            #expect(!error.description.isEmpty)
        }
        guard case .failure(let e) = TimestampParser.parse("2024-05-01T12:00:00") else { return }
        #expect(e.description.contains("time zone"))
    }
}
