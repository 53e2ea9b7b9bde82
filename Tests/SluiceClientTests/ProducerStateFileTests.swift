import Foundation
import Testing

@testable import SluiceClient

@Suite struct ProducerStateFileTests {
    func temporaryPath() -> String {
        NSTemporaryDirectory() + "sluice-producer-\(UUID().uuidString).json"
    }

    @Test func aMissingFileIsCreatedWithARandomProducerAndSeqOne() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let state = try ProducerStateFile.loadOrCreate(path: path)
        #expect(state.nextSeq == 1)
        #expect(try ProducerStateFile.loadOrCreate(path: path) == state)
    }

    @Test func aRestartedProducerKeepsItsIdentityAndContinuesItsSeq() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try ProducerStateFile.loadOrCreate(path: path)
        try ProducerStateFile.write(ProducerState(producer: first.producer, nextSeq: 4_097), to: path)
        let again = try ProducerStateFile.loadOrCreate(path: path)
        #expect(again.producer == first.producer)
        #expect(again.nextSeq == 4_097)
    }

    @Test func aBrokenFileIsReportedWithWhatToDo() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "{\"producer_id\": \"nope\", \"next_seq\": 3}".write(toFile: path, atomically: true, encoding: .utf8)
        #expect {
            try ProducerStateFile.loadOrCreate(path: path)
        } throws: { error in
            "\(error)".contains("producer_id") && "\(error)".contains("delete it")
        }
    }

    @Test func seqsNeedTheFileWrittenBeforeTheyAreUsed() {
        var seqs = SeqAllocator(next: 4_097, persisted: true, blockSize: 10)
        #expect(!seqs.canAllocate)
        #expect(seqs.nextReservation == 4_107)
        seqs.reserved(upTo: seqs.nextReservation)
        var used: [UInt64] = []
        while seqs.canAllocate { used.append(seqs.allocate()) }
        #expect(used == Array(4_097..<4_107))
    }

    @Test func seqsSkipPastWhatTheServerHasCommitted() {
        var seqs = SeqAllocator(next: 1, persisted: false)
        seqs.skip(through: 41)
        #expect(seqs.allocate() == 42)
        seqs.skip(through: 10)
        #expect(seqs.allocate() == 43)
    }

    @Test func producerIdentitiesPrintAsUUIDsAndParseBack() throws {
        let id = ProducerIdentity.random()
        let text = id.description
        #expect(text.count == 36)
        #expect(ProducerIdentity(uuidString: text) == id)
        #expect(ProducerIdentity(bytes: [1, 2, 3]) == nil)
    }
}
