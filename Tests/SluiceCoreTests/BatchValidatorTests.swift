import SluiceProtocol
import Testing

@testable import SluiceCore

@Suite struct BatchValidatorTests {
    let now: Int64 = 1_700_000_000_000_000
    let policy = ValidationPolicy()

    func batch(seq: UInt64 = 1, _ series: Series...) -> Batch {
        var b = Batch()
        b.seq = seq
        b.series = series
        return b
    }

    func series(
        _ device: String = "dev-1", _ metric: String = "temp", times: [Int64]? = nil, values: [Double] = [1.5],
        quality: [UInt32] = []
    ) -> Series {
        var builder = SeriesBuilder(deviceID: device, metric: metric)
        let ts = times ?? values.indices.map { now - 1_000_000 * Int64(values.count - $0) }
        for (i, v) in values.enumerated() {
            builder.append(timeMicros: ts[i], value: v, quality: quality.isEmpty ? 0 : quality[i])
        }
        return builder.build()
    }

    func validate(_ b: Batch, prefix: String = "") throws -> ValidatedBatch {
        try BatchValidator.validate(b, policy: policy, nowMicros: now, devicePrefix: prefix)
    }

    @Test func goodReadingsAreAllAccepted() throws {
        let result = try validate(batch(series(values: [1.5, 2.5, 3.25]), series("dev-2", "hum", values: [40])))
        #expect(result.acceptedCount == 4)
        #expect(result.rejected.isEmpty)
        #expect(result.accepted.map(\.deviceID) == ["dev-1", "dev-2"])
        #expect(result.accepted[0].values == [1.5, 2.5, 3.25])
    }

    @Test func nanIsRejectedAsValueNotFinite() throws {
        let result = try validate(batch(series(values: [1, .nan, 3])))
        #expect(result.acceptedCount == 2)
        #expect(result.rejected.count == 1)
        #expect(result.rejected[0].code == .valueNotFinite)
        #expect(result.rejected[0].index == 1)
        #expect(result.rejected[0].message == "value is NaN")
    }

    @Test func infinityIsRejectedAsValueNotFinite() throws {
        let result = try validate(batch(series(values: [.infinity, -.infinity])))
        #expect(result.rejected.map(\.code) == [.valueNotFinite, .valueNotFinite])
        #expect(result.rejected.map(\.message) == ["value is +infinity", "value is -infinity"])
    }

    @Test func readingOlderThanMaxAgeIsRejectedAsTooOld() throws {
        let eightDays: Int64 = 8 * 86_400 * 1_000_000
        let result = try validate(batch(series(times: [now - eightDays, now], values: [1, 2])))
        #expect(result.rejected.map(\.code) == [.tooOld])
        #expect(result.rejected[0].message.contains("is 8 days old; the limit is 7 days"))
        #expect(result.acceptedCount == 1)
    }

    @Test func readingExactlyAtMaxAgeIsAccepted() throws {
        let result = try validate(batch(series(times: [now - policy.maxAgeMicros], values: [1])))
        #expect(result.rejected.isEmpty)
    }

    @Test func readingBeyondMaxSkewIsRejectedAsInFuture() throws {
        let result = try validate(batch(series(times: [now + 6 * 60_000_000], values: [1])))
        #expect(result.rejected.map(\.code) == [.inFuture])
        #expect(result.rejected[0].message.contains("6 minutes in the future; the limit is 5 minutes"))
    }

    @Test func readingJustInsideMaxSkewIsAccepted() throws {
        let result = try validate(batch(series(times: [now + policy.maxSkewMicros], values: [1])))
        #expect(result.rejected.isEmpty)
    }

    @Test func deviceIDWithAForbiddenCharacterRejectsItsReadings() throws {
        let result = try validate(batch(series("dev 1", values: [1, 2])))
        #expect(result.rejected.map(\.code) == [.badDeviceID, .badDeviceID])
        #expect(result.rejected[0].message == "device id \"dev 1\" is not 1–64 bytes of [A-Za-z0-9._:-]")
    }

    @Test func deviceIDLengthMustBe1To64Bytes() {
        #expect(!BatchValidator.isValidDeviceID(""))
        #expect(BatchValidator.isValidDeviceID(String(repeating: "a", count: 64)))
        #expect(!BatchValidator.isValidDeviceID(String(repeating: "a", count: 65)))
        #expect(BatchValidator.isValidDeviceID("Plant-1.line_2:sensor-9"))
        #expect(!BatchValidator.isValidDeviceID("dév"))
    }

    @Test func metricWithUpperCaseRejectsItsReadings() throws {
        let result = try validate(batch(series("dev-1", "Temp", values: [1])))
        #expect(result.rejected.map(\.code) == [.badMetric])
        #expect(result.rejected[0].message == "metric \"Temp\" is not 1–64 bytes of [a-z0-9_.]")
    }

    @Test func metricLengthAndCharsetAreChecked() {
        #expect(!BatchValidator.isValidMetric(""))
        #expect(BatchValidator.isValidMetric("temp.c_1"))
        #expect(!BatchValidator.isValidMetric("temp-c"))
        #expect(!BatchValidator.isValidMetric(String(repeating: "m", count: 65)))
    }

    @Test func rejectedIndexCountsAcrossSeries() throws {
        let result = try validate(batch(series(values: [1, 2]), series("dev-2", values: [3, .nan])))
        #expect(result.rejected.map(\.index) == [3])
    }

    @Test func qualityCodesFollowTheirAcceptedReadings() throws {
        let result = try validate(batch(series(values: [1, .nan, 3], quality: [0, 5, 7])))
        #expect(result.accepted[0].quality == [0, 7])
        #expect(result.rejected[0].quality == 5)
    }

    @Test func ackCarriesAtMostSixteenReasons() throws {
        let result = try validate(batch(series(values: Array(repeating: .nan, count: 40))))
        #expect(result.rejected.count == 40)
        #expect(result.firstReasons.count == 16)
        #expect(result.firstReasons[15].index == 15)
    }

    @Test func columnsOfUnequalLengthRejectTheWholeBatch() {
        var s = series(values: [1, 2])
        s.values = [1, 2, 3]
        s.scaledDeltas = []
        #expect(throws: WireError.self) { try validate(batch(s)) }
        do {
            _ = try validate(batch(seq: 7, s))
        } catch let error as WireError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.hasPrefix("batch 7: series 0"))
            #expect(error.message.contains("columns must have equal length"))
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test func seqZeroRejectsTheWholeBatch() {
        #expect(throws: WireError(.invalidArgument, "batch seq is 0: seqs start at 1 and strictly increase per producer")) {
            try validate(batch(seq: 0, series()))
        }
    }

    @Test func batchAboveMaxBatchReadingsIsRejectedWhole() throws {
        let small = ValidationPolicy(maxBatchReadings: 2)
        #expect(throws: WireError.self) {
            try BatchValidator.validate(batch(series(values: [1, 2, 3])), policy: small, nowMicros: now)
        }
    }

    @Test func deviceOutsideTheTokenScopeIsPermissionDenied() {
        do {
            _ = try validate(batch(series("plant2.x", values: [1])), prefix: "plant1.")
            Issue.record("expected PERMISSION_DENIED")
        } catch let error as WireError {
            #expect(error.code == .permissionDenied)
            #expect(error.message.contains("\"plant2.x\" is outside this token's scope"))
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test func deviceInsideTheTokenScopeIsAccepted() throws {
        #expect(try validate(batch(series("plant1.x", values: [1])), prefix: "plant1.").acceptedCount == 1)
    }

    @Test func emptyBatchIsInvalidArgument() {
        // A batch of no readings costs no credit, so accepting it would let a client without credit grow the
        // writer queue (issue 15).
        #expect { try validate(batch()) } throws: { ($0 as! WireError).code == .invalidArgument }
    }

    @Test func readingCountIsTheSumOfSeriesLengths() {
        #expect(BatchValidator.readingCount(of: batch(series(values: [1, 2]), series(values: [3]))) == 3)
    }

    @Test func timestampsAreFormattedAsISO8601() {
        #expect(Timestamp.iso8601(micros: 0) == "1970-01-01T00:00:00Z")
        #expect(Timestamp.iso8601(micros: 1_700_000_000_250_000) == "2023-11-14T22:13:20.250000Z")
        #expect(Timestamp.iso8601(micros: -1) == "1969-12-31T23:59:59.999999Z")
        #expect(Timestamp.iso8601(micros: 951_782_400_000_000) == "2000-02-29T00:00:00Z")
    }
}
