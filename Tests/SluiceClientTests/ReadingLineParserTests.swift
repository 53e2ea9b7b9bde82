import Testing

@testable import SluiceClient

@Suite struct ReadingLineParserTests {
    @Test func csvWithHeaderCommentsAndOptionalQuality() {
        var parser = ReadingLineParser()
        #expect(parser.parse("device,metric,timestamp,value,quality") == .skipped)
        #expect(parser.parse("# a comment") == .skipped)
        #expect(parser.parse("   ") == .skipped)
        #expect(
            parser.parse("pump-1,temp_c,1714564800,21.37\r")
                == .reading(Reading(deviceID: "pump-1", metric: "temp_c", timeMicros: 1_714_564_800_000_000, value: 21.37)))
        #expect(
            parser.parse("\"pump-2\", flow ,2024-05-01T12:00:00Z,-3,4")
                == .reading(Reading(deviceID: "pump-2", metric: "flow", timeMicros: 1_714_564_800_000_000, value: -3, quality: 4)))
        #expect(parser.format == .csv)
    }

    @Test func badCSVLinesNameTheProblem() {
        var parser = ReadingLineParser(format: .csv)
        func message(_ line: String) -> String {
            if case .bad(let m) = parser.parse(line) { return m }
            return "parsed"
        }
        #expect(message("a,b,c").contains("4 or 5"))
        #expect(message("a,b,1714564800,warm").contains("value \"warm\""))
        #expect(message("a,b,noon,1").contains("timestamp \"noon\""))
        #expect(message("a,b,1714564800,1,-1").contains("quality"))
        #expect(message(",b,1714564800,1").contains("device"))
    }

    @Test func jsonLinesWithStringOrNumberTimestamps() {
        var parser = ReadingLineParser()
        #expect(
            parser.parse(#"{"device": "d1", "metric": "t", "timestamp": "2024-05-01T12:00:00Z", "value": 1.5}"#)
                == .reading(Reading(deviceID: "d1", metric: "t", timeMicros: 1_714_564_800_000_000, value: 1.5)))
        #expect(parser.format == .jsonLines)
        #expect(
            parser.parse(#"{"device_id": "d1", "metric": "t", "ts": 1714564800123, "value": 2, "quality": 3}"#)
                == .reading(Reading(deviceID: "d1", metric: "t", timeMicros: 1_714_564_800_123_000, value: 2, quality: 3)))
        if case .bad(let m) = parser.parse(#"{"device": "d1", "metric": "t", "value": 2}"#) {
            #expect(m.contains("timestamp"))
        } else {
            Issue.record("a line without timestamp parsed")
        }
        if case .bad(let m) = parser.parse("{not json") { #expect(m.contains("JSON")) } else { Issue.record("parsed") }
    }
}
