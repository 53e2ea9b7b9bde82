import Foundation
import SluiceProtocol
import Testing

@testable import SluiceCore

/// Bounds before expansion (issue 15): shape problems reject the batch before any per-reading work.
@Suite struct BatchBoundsTests {
    let now: Int64 = 1_700_000_000_000_000

    func series(_ device: String = "dev-1", _ metric: String = "temp", count: Int = 1) -> Series {
        var builder = SeriesBuilder(deviceID: device, metric: metric)
        for i in 0..<count { builder.append(timeMicros: now - Int64(count - i) * 1_000_000, value: 1, quality: 0) }
        return builder.build()
    }

    func validate(_ series: [Series], policy: ValidationPolicy = .init()) throws(WireError) -> ValidatedBatch {
        var b = Batch()
        b.seq = 7
        b.series = series
        return try BatchValidator.validate(b, policy: policy, nowMicros: now)
    }

    @Test func aDeviceIDOver64BytesIsDeadLetteredUnderAShortDescription() throws {
        let id = String(repeating: "d", count: 100_000)
        let result = try validate([series(id, count: 3), series("ok", count: 2)])
        #expect(result.acceptedCount == 2)
        #expect(result.rejected.count == 3)
        for r in result.rejected {
            #expect(r.code == .badDeviceID)
            #expect(r.deviceID.hasPrefix("\"dddddddddddddddd…\" (100000 bytes, fnv1a "), "\(r.deviceID)")
            #expect(r.deviceID.utf8.count < 64)
            #expect(r.message.utf8.count < 200, "\(r.message)")
            #expect(r.message.hasSuffix("is not 1–64 bytes of [A-Za-z0-9._:-]"))
        }
    }

    @Test func aMetricOver64BytesIsDeadLettered() throws {
        let result = try validate([series("dev", String(repeating: "m", count: 65))])
        #expect(result.rejected.map(\.code) == [.badMetric])
        #expect(result.rejected[0].metric.contains("(65 bytes, fnv1a "))
        #expect(try validate([series("dev", String(repeating: "m", count: 64))]).rejected.isEmpty)
    }

    @Test func emptySeriesAndEmptyBatchesAreInvalid() {
        #expect { try validate([]) } throws: { ($0 as! WireError).message.contains("no series") }
        #expect { try validate([series(), Series()]) } throws: {
            ($0 as! WireError).message == "batch 7: series 1 holds no readings: leave empty series out"
        }
    }

    @Test func seriesPerBatchAreLimited() {
        let policy = ValidationPolicy(maxSeriesPerBatch: 3)
        #expect(throws: Never.self) { try validate((0..<3).map { series("d\($0)") }, policy: policy) }
        #expect { try validate((0..<4).map { series("d\($0)") }, policy: policy) } throws: {
            ($0 as! WireError).message.contains("more than 3 series")
        }
    }

    @Test func tokensOver256BytesAreRefusedUnhashed() {
        let table = TokenTable(entries: [TokenEntry(id: "t", hashHex: SHA256.hexDigest("x"), devicePrefix: "", createdAt: 0, name: "")])
        guard case .denied(let e) = table.authorize(token: String(repeating: "a", count: 257), peerIsLoopback: true) else {
            Issue.record("a 257-byte token was not refused")
            return
        }
        #expect(e.code == .unauthenticated)
        #expect(e.message.contains("257 bytes is longer than 256 bytes"))
    }

    @Test func tokenPrefixesAndNamesAreValidated() {
        #expect(throws: Never.self) { try TokenTable.validate(devicePrefix: "plant1.", name: "gateway 3, hall B") }
        #expect(throws: Never.self) { try TokenTable.validate(devicePrefix: "", name: "") }
        #expect { try TokenTable.validate(devicePrefix: "plant 1", name: "") } throws: {
            "\($0)".contains("--prefix \"plant 1\" is not a device-id prefix")
        }
        #expect { try TokenTable.validate(devicePrefix: "p.", name: "line\nevil 0000 * 0") } throws: { "\($0)".contains("--name") }
        #expect(throws: TokenFileError.self) { try TokenTable.validate(devicePrefix: "p.", name: "a # b") }
    }

    @Test func theHandshakeDeadlineCoversAuthentication() {
        var m = SessionStateMachine(now: 0, timeouts: .init(handshake: 1_000_000_000))
        _ = m.prefaceReceived()
        var hello = Hello()
        hello.protocolVersion = 1
        hello.producerID = Data(repeating: 1, count: 16)
        _ = m.helloReceived(hello)
        #expect(m.state == .awaitingHello(authenticating: true))
        #expect(m.tick(now: 500_000_000) == nil)
        guard case .sendError(let e, _, true)? = m.tick(now: 2_000_000_000) else {
            Issue.record("no deadline while authenticating")
            return
        }
        #expect(e.message.contains("the handshake (Hello and its authentication) did not finish within 1 s"))
    }
}
