import Testing

@testable import SluiceClient

@Suite struct PendingReadingsTests {
    func chunk(_ device: String, _ times: ClosedRange<Int64>) -> SeriesChunk {
        SeriesChunk(deviceID: device, metric: "m", times: Array(times), values: times.map { Double($0) })
    }

    @Test func takingSplitsAChunkAndKeepsTheRestInOrder() {
        var pending = PendingReadings<Int>()
        pending.append(chunk("a", 1...5), stamp: 1)
        pending.append(chunk("b", 10...12), stamp: 2)
        #expect(pending.count == 8)
        let (first, stamp) = pending.take(3)
        #expect(stamp == 1)
        #expect(first == [chunk("a", 1...3)])
        let (second, stamp2) = pending.take(4)
        #expect(stamp2 == 1)
        #expect(second == [chunk("a", 4...5), chunk("b", 10...11)])
        #expect(pending.oldestStamp == 2)
        let (rest, _) = pending.take(100)
        #expect(rest == [chunk("b", 12...12)])
        #expect(pending.isEmpty)
        #expect(pending.estimatedBytes == 0)
    }

    @Test func qualityCodesAreSplitWithTheirReadings() {
        var pending = PendingReadings<Int>()
        pending.append(SeriesChunk(deviceID: "a", metric: "m", times: [1, 2, 3], values: [1, 2, 3], quality: [0, 7, 0]), stamp: 0)
        let (first, _) = pending.take(2)
        #expect(first[0].quality == [0, 7])
        let (second, _) = pending.take(1)
        #expect(second[0].quality == [0])
    }

    @Test func readingsAreGroupedBySeriesInOrderOfFirstAppearance() {
        let readings = [
            Reading(deviceID: "a", metric: "t", timeMicros: 1, value: 1),
            Reading(deviceID: "b", metric: "t", timeMicros: 1, value: 2),
            Reading(deviceID: "a", metric: "t", timeMicros: 2, value: 3, quality: 9),
        ]
        let chunks = SeriesChunk.group(readings)
        #expect(chunks.count == 2)
        #expect(chunks[0].deviceID == "a" && chunks[0].times == [1, 2] && chunks[0].quality == [0, 9])
        #expect(chunks[1].deviceID == "b" && chunks[1].values == [2] && chunks[1].quality.isEmpty)
    }

    @Test func manySmallChunksDoNotLeakTheirSlots() {
        var pending = PendingReadings<Int>()
        for i in 0..<10_000 {
            pending.append(chunk("d", Int64(i)...Int64(i)), stamp: i)
            _ = pending.take(1)
        }
        #expect(pending.isEmpty)
    }
}
