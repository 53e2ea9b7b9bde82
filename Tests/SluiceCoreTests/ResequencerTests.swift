import Testing

@testable import SluiceCore

@Suite struct ResequencerTests {
    @Test func workFinishedInOrderIsReleasedAtOnce() {
        var r = Resequencer<String>()
        let a = r.take(), b = r.take()
        #expect(r.finish(a, "a").map(\.item) == ["a"])
        #expect(r.finish(b, "b").map(\.item) == ["b"])
        #expect(r.pending == 0)
    }

    @Test func laterWorkWaitsForEarlierWork() {
        var r = Resequencer<String>()
        let a = r.take(), b = r.take(), c = r.take()
        #expect(r.finish(c, "c").isEmpty)
        #expect(r.finish(b, "b").isEmpty)
        #expect(r.heldBack == 2)
        let released = r.finish(a, "a")
        #expect(released.map(\.item) == ["a", "b", "c"])
        #expect(released.map(\.ticket) == [a, b, c])
        #expect(r.pending == 0 && r.heldBack == 0)
    }

    @Test func everyPermutationOfFiveIsReleasedInArrivalOrder() {
        func permutations(_ xs: [Int]) -> [[Int]] {
            xs.count <= 1 ? [xs] : xs.indices.flatMap { i in
                var rest = xs
                let x = rest.remove(at: i)
                return permutations(rest).map { [x] + $0 }
            }
        }
        for order in permutations([0, 1, 2, 3, 4]) {
            var r = Resequencer<Int>()
            let tickets = (0..<5).map { _ in r.take() }
            var out: [Int] = []
            for i in order { out += r.finish(tickets[i], i).map(\.item) }
            #expect(out == [0, 1, 2, 3, 4], "order \(order)")
        }
    }

    @Test func pendingCountsTicketsNotYetReleased() {
        var r = Resequencer<Int>()
        let a = r.take()
        _ = r.take()
        #expect(r.pending == 2)
        _ = r.finish(a, 0)
        #expect(r.pending == 1)
    }
}
