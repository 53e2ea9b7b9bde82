import Testing

@testable import SluiceClient

@Suite struct RetransmitBufferTests {
    func filled(_ seqs: [UInt64], bytes: Int = 100, capacity: Int = 1_000) -> RetransmitBuffer<String> {
        var buffer = RetransmitBuffer<String>(capacityBytes: capacity)
        for s in seqs { buffer.append(seq: s, readings: 10, bytes: bytes, payload: "batch \(s)") }
        return buffer
    }

    @Test func fillsUpByBytesAndDrainsByAcks() {
        var buffer = filled([1, 2, 3, 4, 5, 6, 7, 8, 9], bytes: 100, capacity: 1_000)
        #expect(!buffer.isFull)
        buffer.append(seq: 10, readings: 10, bytes: 100, payload: "batch 10")
        #expect(buffer.isFull)
        #expect(buffer.bytes == 1_000 && buffer.readings == 100)
        #expect(buffer.remove(seq: 1)?.payload == "batch 1")
        #expect(!buffer.isFull)
        #expect(buffer.remove(seq: 1) == nil)
    }

    @Test func afterAReconnectEverythingUnackedIsResentInSeqOrder() {
        var buffer = filled([1, 2, 3, 4])
        for _ in 0..<4 { buffer.markNextSent() }
        #expect(buffer.nextToSend == nil)
        _ = buffer.remove(seq: 2)
        buffer.sessionRestarted()
        var order: [UInt64] = []
        while let next = buffer.nextToSend {
            order.append(next.seq)
            buffer.markNextSent()
        }
        #expect(order == [1, 3, 4])
    }

    @Test func anAckOutOfOrderKeepsTheSendCursorRight() {
        var buffer = filled([1, 2, 3])
        buffer.markNextSent()
        buffer.markNextSent()
        _ = buffer.remove(seq: 2)
        #expect(buffer.nextToSend?.seq == 3)
        _ = buffer.remove(seq: 3)
        #expect(buffer.nextToSend == nil)
        #expect(buffer.all.map(\.seq) == [1])
    }

    @Test func oneBatchLargerThanTheBudgetIsStillAccepted() {
        var buffer = RetransmitBuffer<String>(capacityBytes: 10)
        buffer.append(seq: 1, readings: 1, bytes: 500, payload: "")
        #expect(buffer.isFull)
        #expect(buffer.count == 1)
    }
}
