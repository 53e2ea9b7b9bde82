import Testing

@testable import SluiceServer

@Suite struct PipelineQueueTests {
    @Test func aWorkerTakesQueuedJobsInOrderWithoutWaiting() async {
        let queue = PipelineQueue<Int>()
        for i in 1...5 { queue.submit(i) }
        var taken: [Int] = []
        for _ in 1...5 { if let job = await queue.next() { taken.append(job) } }
        #expect(taken == [1, 2, 3, 4, 5])
    }

    @Test func aParkedWorkerIsHandedTheNextJob() async {
        let queue = PipelineQueue<Int>()
        let worker = Task { await queue.next() }
        // Give the worker time to park; the job must reach it whether or not it has parked yet.
        try? await Task.sleep(for: .milliseconds(20))
        queue.submit(42)
        #expect(await worker.value == 42)
    }

    @Test func finishLetsWorkersDrainWhatIsQueuedThenEnds() async {
        let queue = PipelineQueue<Int>()
        queue.submit(1)
        queue.submit(2)
        queue.finish()
        queue.submit(3)  // after finish: ignored
        #expect(await queue.next() == 1)
        #expect(await queue.next() == 2)
        #expect(await queue.next() == nil)
        #expect(await queue.next() == nil)
    }

    @Test func finishWakesEveryParkedWorker() async {
        let queue = PipelineQueue<Int>()
        let workers = (0..<4).map { _ in Task { await queue.next() } }
        try? await Task.sleep(for: .milliseconds(20))
        queue.finish()
        for worker in workers { #expect(await worker.value == nil) }
    }

    @Test func everyJobIsTakenExactlyOnceByConcurrentWorkers() async {
        let queue = PipelineQueue<Int>()
        let count = 20_000
        let seen = await withTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var mine: [Int] = []
                    while let job = await queue.next() { mine.append(job) }
                    return mine
                }
            }
            // Submitted from another task while the workers run, so both the hand-off and the queued path are used.
            let producer = Task.detached {
                for i in 0..<count {
                    queue.submit(i)
                    if i % 997 == 0 { await Task.yield() }
                }
                queue.finish()
            }
            await producer.value
            var all: [Int] = []
            for await part in group { all += part }
            return all
        }
        #expect(seen.count == count)
        #expect(Set(seen).count == count)
    }
}
