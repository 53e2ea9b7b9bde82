import Testing

@testable import SluiceProtocol

@Suite struct SeriesBuilderTests {
    func roundTrip(_ values: [Double], times: [Int64]? = nil, quality: [UInt32] = []) throws -> (Series, ExpandedSeries) {
        var builder = SeriesBuilder(deviceID: "d", metric: "m")
        let times = times ?? values.indices.map { 1_700_000_000_000_000 + Int64($0) * 1_000_000 }
        for (i, v) in values.enumerated() {
            builder.append(timeMicros: times[i], value: v, quality: quality.isEmpty ? 0 : quality[i])
        }
        let series = builder.build()
        let expanded = try series.expand()
        #expect(expanded.times == times)
        #expect(expanded.values.map(\.bitPattern) == values.map(\.bitPattern))
        return (series, expanded)
    }

    @Test func exactDecimalsUseTheScaledColumn() throws {
        let (series, _) = try roundTrip([21.37, 21.38, 21.36, 21.4])
        #expect(series.values.isEmpty)
        #expect(series.decimalExponent == -2)
        #expect(series.scaledDeltas == [2137, 1, -2, 4])
        #expect(series.timeDeltasUs == [0, 1_000_000, 1_000_000, 1_000_000])
    }

    @Test func integersUseExponentZero() throws {
        let (series, _) = try roundTrip([1, 2, 3, -7, 0])
        #expect(series.decimalExponent == 0)
        #expect(series.scaledDeltas == [1, 1, 1, -10, 7])
    }

    @Test func valuesThatAreNotExactDecimalsUseDoubles() throws {
        let (series, _) = try roundTrip([0.1 + 0.2, 1.0 / 3.0, 21.5])
        #expect(series.scaledDeltas.isEmpty)
        #expect(series.values.count == 3)
    }

    @Test(arguments: [Double.nan, .infinity, -.infinity, -0.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude])
    func specialValuesForceTheDoubleColumn(special: Double) throws {
        let (series, _) = try roundTrip([1.5, special, 2.25])
        #expect(series.scaledDeltas.isEmpty)
        #expect(series.values.count == 3)
    }

    @Test func mixedPrecisionTakesTheFinestExponent() throws {
        let (series, _) = try roundTrip([1, 2.5, 3.125])
        #expect(series.decimalExponent == -3)
    }

    @Test func qualityColumnAppearsOnlyWhenSomethingIsNotGood() throws {
        let (clean, _) = try roundTrip([1, 2, 3])
        #expect(clean.quality.isEmpty)
        let (flagged, expanded) = try roundTrip([1, 2, 3], quality: [0, 0, 4])
        #expect(flagged.quality == [0, 0, 4])
        #expect(expanded.quality == [0, 0, 4])
    }

    @Test func irregularAndNegativeTimesRoundTrip() throws {
        _ = try roundTrip([1, 2, 3], times: [-5_000_000, 17, 16])
    }

    @Test func aRegularSeriesCostsAboutAByteAndAHalfPerReadingBeforeZstd() throws {
        var builder = SeriesBuilder(deviceID: "gw-1.sensor-7", metric: "temp_c")
        var v = 2000
        for i in 0..<3600 {
            v += [0, 1, -1, 0, 2, -2][i % 6]
            builder.append(timeMicros: 1_700_000_000_000_000 + Int64(i) * 1_000_000, value: Double(v) / 100)
        }
        let bytes: [UInt8] = try builder.build().serializedBytes()
        // 3 bytes of time delta (1,000,000 µs as a zigzag varint) + 1 byte of value delta per reading.
        #expect(Double(bytes.count) / 3600 < 4.1)
        let compressed = ZstdCompressor().compress(bytes)
        #expect(Double(compressed.readableBytes) / 3600 < 1.0, "zstd: \(compressed.readableBytes) bytes for 3600 readings")
    }
}

@Suite struct SeriesExpandTests {
    func series(_ configure: (inout Series) -> Void) -> Series {
        var s = Series()
        s.deviceID = "d"
        s.metric = "m"
        s.baseTimeUs = 1_000
        s.timeDeltasUs = [0, 1, 1]
        configure(&s)
        return s
    }

    @Test func mismatchedValueColumnIsInvalid() {
        let error = #expect(throws: WireError.self) { try series { $0.values = [1, 2] }.expand(index: 3) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message == "series 3 (device \"d\", metric \"m\"): 3 timestamps but 2 values; columns must have equal length")
    }

    @Test func bothValueColumnsAreInvalid() {
        let error = #expect(throws: WireError.self) {
            try series { $0.values = [1, 2, 3]; $0.scaledDeltas = [1, 1, 1] }.expand()
        }
        #expect(error?.message.contains("both value columns") == true)
    }

    @Test func mismatchedQualityIsInvalid() {
        #expect(throws: WireError.self) { try series { $0.values = [1, 2, 3]; $0.quality = [1] }.expand() }
    }

    @Test func timeOverflowIsInvalid() {
        let error = #expect(throws: WireError.self) {
            try series { $0.values = [1, 2, 3]; $0.timeDeltasUs = [0, .max, 1] }.expand()
        }
        #expect(error?.message.contains("overflow") == true)
    }

    @Test func exponentOutOfRangeIsInvalid() {
        #expect(throws: WireError.self) {
            try series { $0.scaledDeltas = [1, 1, 1]; $0.decimalExponent = 40 }.expand()
        }
    }
}
