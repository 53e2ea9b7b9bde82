import SluiceProtocol
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// DESIGN §3, one rule per test: the bad reading is not in `readings`, it is in `dead_letters` with its
/// reason, and the Ack counts it; the good reading next to it is written.
@Suite struct ValidationRuleTests {
    enum Rule: String, CaseIterable, CustomTestStringConvertible {
        case nan, infinity, tooOld, inFuture, badDeviceID, badMetric
        var testDescription: String { rawValue }

        var code: RejectCode {
            switch self {
            case .nan, .infinity: .valueNotFinite
            case .tooOld: .tooOld
            case .inFuture: .inFuture
            case .badDeviceID: .badDeviceID
            case .badMetric: .badMetric
            }
        }

        var reason: String {
            switch self {
            case .nan: "value is NaN"
            case .infinity: "value is +infinity"
            case .tooOld: "days old; the limit is 7 days (max age)"
            case .inFuture: "in the future; the limit is 5 minutes (max clock skew)"
            case .badDeviceID: "device id \"boiler #2\" is not 1–64 bytes of [A-Za-z0-9._:-]"
            case .badMetric: "metric \"Temp-C\" is not 1–64 bytes of [a-z0-9_.]"
            }
        }

        /// The bad reading's series.
        func series(now: Int64) -> Series {
            let hour: Int64 = 3_600_000_000
            let (device, metric, time, value): (String, String, Int64, Double) =
                switch self {
                case .nan: ("d1", "temp", now - hour, .nan)
                case .infinity: ("d1", "temp", now - hour, .infinity)
                case .tooOld: ("d1", "temp", now - 8 * 24 * hour, 1.5)
                case .inFuture: ("d1", "temp", now + hour, 1.5)
                case .badDeviceID: ("boiler #2", "temp", now - hour, 1.5)
                case .badMetric: ("d1", "Temp-C", now - hour, 1.5)
                }
            var builder = SeriesBuilder(deviceID: device, metric: metric)
            builder.append(timeMicros: time, value: value, quality: 3)
            return builder.build()
        }
    }

    @Test(arguments: Rule.allCases)
    func badReadingGoesToTheDeadLetterTableWithItsReason(_ rule: Rule) async throws {
        let server = try await TestServer.start(database: "srv_rule_\(rule.rawValue.lowercased())")
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.handshake(producer: producerID(50))
        let now = Readings.nowMicros
        var good = SeriesBuilder(deviceID: "good-1", metric: "temp")
        good.append(timeMicros: now - 1_000_000, value: 21.5)
        try await client.sendBatch(Readings.batch(seq: 7, series: [good.build(), rule.series(now: now)]))
        let ack = try #require(try await client.acks(for: [7])[7])
        #expect(ack.accepted == 1 && ack.rejected == 1)
        #expect(ack.reasons.count == 1)
        #expect(ack.reasons.first?.index == 1)
        #expect(ack.reasons.first?.code == rule.code)
        #expect(ack.reasons.first?.message.contains(rule.reason) == true, "\(ack.reasons.first?.message ?? "")")

        let db = try TestConnection(url: server.databaseURL)
        #expect(try db.query("SELECT device_id, value FROM readings") == [["good-1", "21.5"]])
        let letters = try db.query("SELECT seq, reason_code, reason, quality FROM dead_letters")
        #expect(letters.count == 1)
        #expect(letters.first?[0] == "7")
        #expect(letters.first?[1] == "\(rule.code.rawValue)")
        #expect(letters.first?[2]?.contains(rule.reason) == true)
        #expect(letters.first?[3] == "3")
        await client.close()
    }
}
