import Testing

@testable import SluiceStore

/// The writer's pure decisions: dedup plan, latency window, backoff, queue, identity.
@Suite struct WriterLogicTests {
    let a = ProducerID(bytes: [UInt8](repeating: 1, count: 16))!
    let b = ProducerID(bytes: [UInt8](repeating: 2, count: 16))!

    @Test func aBatchIsNewOnlyAboveItsProducersHighWaterMarkCountingEarlierBatchesOfTheGroup() {
        let plan = GroupPlan(
            batches: [(a, 5), (a, 6), (b, 1), (a, 6), (a, 4), (b, 3), (a, 100)], committed: [a: 5])
        #expect(plan.isNew == [false, true, true, false, false, true, true])
        #expect(plan.advanced == [a: 100, b: 3])
    }

    @Test func aGroupOfDuplicatesAdvancesNothing() {
        let plan = GroupPlan(batches: [(a, 1), (a, 2)], committed: [a: 2])
        #expect(plan.isNew == [false, false])
        #expect(plan.advanced.isEmpty)
    }

    @Test func aProducerStaysOnItsWriterWhileItHasBatchesInFlightAndMovesToTheLeastLoadedOtherwise() {
        var state = PoolState(writers: 2)
        func item(_ producer: ProducerID, _ readings: Int) -> QueuedBatch {
            let writer = state.assignWriter(to: producer, readings: readings)
            return QueuedBatch(
                batch: WriteBatch(producer: producer, seq: 1, series: []), readings: readings, completion: { _ in },
                waitsForRoom: false, writer: writer)
        }
        let a1 = item(a, 1_000)
        let b1 = item(b, 10)
        #expect(a1.writer != b1.writer, "the second producer goes to the idle writer")
        let a2 = item(a, 1_000)
        #expect(a2.writer == a1.writer, "pinned while a1 is in flight, however loaded")
        state.release(a1)
        state.release(a2)
        #expect(state.producerWriters[a] == nil)
        let b2 = item(b, 10)
        #expect(b2.writer == b1.writer)
        let a3 = item(a, 5)
        #expect(a3.writer == a1.writer, "free again, it goes to the least loaded writer: its old one, now empty")
        state.release(b1)
        state.release(b2)
        state.release(a3)
        #expect(state.writerLoad == [0, 0] && state.producerWriters.isEmpty)
    }

    @Test func latencyQuantilesFollowTheRecentWindowOnly() {
        var window = LatencyWindow(size: 100)
        #expect(window.quantile(0.99) == 0)
        for value in 1...100 { window.record(Double(value)) }
        #expect(window.quantile(0.5) == 50)
        #expect(window.quantile(0.99) == 99)
        for _ in 1...100 { window.record(1) }
        #expect(window.quantile(0.99) == 1)
    }

    @Test func backoffDoublesUpToTheCapWithJitterInTheUpperHalf() {
        let backoff = Backoff(initial: 0.1, maximum: 1)
        for attempt in 0..<10 {
            let ceiling = min(1, 0.1 * Double(1 << attempt))
            for _ in 0..<20 {
                let delay = backoff.delay(attempt: attempt)
                #expect(delay >= ceiling / 2 && delay <= ceiling)
            }
        }
        #expect(backoff.delay(attempt: 1_000) <= 1)
    }

    @Test func theFIFOKeepsOrderAcrossCompaction() {
        var queue = FIFO<Int>()
        var expected = 0
        for value in 0..<5_000 {
            queue.append(value)
            if value % 3 == 0, let first = queue.popFirst() {
                #expect(first == expected)
                expected += 1
            }
        }
        while let first = queue.popFirst() {
            #expect(first == expected)
            expected += 1
        }
        #expect(expected == 5_000 && queue.isEmpty)
    }

    @Test func producerIDsRoundTripThroughBytesAndUUIDText() {
        let id = ProducerID.random()
        #expect(ProducerID(bytes: id.bytes) == id)
        #expect(ProducerID(uuidString: id.description) == id)
        #expect(ProducerID(uuidString: id.description.uppercased()) == id)
        #expect(ProducerID(bytes: [1, 2, 3]) == nil)
        let fixed = ProducerID(bytes: [0x3F, 0x25, 0x04, 0xE0, 0x4F, 0x89, 0x41, 0xD3, 0x9A, 0x0C, 0x03, 0x05, 0xE8, 0x2C, 0x33, 0x01])!
        #expect(fixed.description == "3f2504e0-4f89-41d3-9a0c-0305e82c3301")
    }

    @Test func malformedBatchesAreDescribed() {
        let good = RowSeries(deviceID: "d", metric: "m", times: [1, 2], values: [1, 2])
        #expect(WriteBatch(producer: a, seq: 1, series: [good]).structuralProblem == nil)
        #expect(WriteBatch(producer: a, seq: 0, series: [good]).structuralProblem?.contains("seq 0") == true)
        var short = good
        short.values = [1]
        #expect(WriteBatch(producer: a, seq: 1, series: [short]).structuralProblem?.contains("2 times but 1 values") == true)
        var badQuality = good
        badQuality.quality = [1, 2, 3]
        #expect(WriteBatch(producer: a, seq: 1, series: [badQuality]).structuralProblem?.contains("3 quality") == true)
    }

    @Test func registryArrayLiteralsEscapeQuotesAndBackslashes() {
        #expect(DeviceRegistryReader.arrayLiteral(["a", #"b"c"#, #"d\e"#]) == #"{"a","b\"c","d\\e"}"#)
    }
}
