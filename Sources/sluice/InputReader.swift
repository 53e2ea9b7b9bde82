import Foundation
import SluiceClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads readings from files or stdin on a thread of its own (file reads block; the cooperative pool must
/// not), parses them line by line, and hands out batches of up to `batchSize` readings — sooner when input
/// pauses for `linger` (a slow `tail -f` still gets its readings out).
///
/// At most `depth` batches wait unconsumed; the thread blocks beyond that, so memory stays bounded however
/// fast the input and however slow the server.
final class InputReader: Sendable {
    enum Item: Sendable {
        /// `linesThrough`: input lines consumed so far, all inputs together (the batch's readings, and any bad or
        /// skipped lines before them, are within them): the input position a spool records.
        case batch([Reading], linesThrough: Int)
        /// A line that could not be read; it is skipped.
        case badLine(source: String, line: Int, message: String)
        /// A file could not be opened or read.
        case failed(String)
    }

    let items: AsyncStream<Item>
    /// Input bytes consumed so far, and the total when every input is a regular file.
    let bytesRead = Atomic<Int>(0)
    let totalBytes: Int?
    let linesRead = Atomic<Int>(0)
    let badLines = Atomic<Int>(0)
    private let gate: DispatchSemaphore
    private let continuation: AsyncStream<Item>.Continuation

    init(paths: [String], format: ReadingLineParser.Format?, batchSize: Int, linger: Duration, depth: Int = 4) {
        let inputs = paths.isEmpty ? ["-"] : paths
        var total = 0
        var known = true
        for path in inputs {
            var info = stat()
            if path != "-", stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                total += Int(info.st_size)
            } else {
                known = false
            }
        }
        totalBytes = known ? total : nil
        gate = DispatchSemaphore(value: depth)
        let (stream, continuation) = AsyncStream.makeStream(of: Item.self)
        items = stream
        self.continuation = continuation
        let thread = Thread { [self] in
            self.run(inputs, format: format, batchSize: max(1, batchSize), linger: linger, into: continuation)
        }
        thread.name = "sluice-input"
        thread.start()
    }

    /// The consumer took a batch: let the reader produce another.
    func consumed() { gate.signal() }

    /// Ends `items` now (after what it already holds): the command was interrupted. The reading thread's
    /// further items are discarded; it stops at the next full queue or when the process exits.
    func stop() { continuation.finish() }

    private func run(
        _ inputs: [String], format: ReadingLineParser.Format?, batchSize: Int, linger: Duration,
        into continuation: AsyncStream<Item>.Continuation
    ) {
        var batch: [Reading] = []
        batch.reserveCapacity(batchSize)
        var batchStarted = ContinuousClock.now
        var totalLines = 0
        func emit() {
            guard !batch.isEmpty else { return }
            gate.wait()
            continuation.yield(.batch(batch, linesThrough: totalLines))
            batch = []
            batch.reserveCapacity(batchSize)
        }
        let lingerMillis = Int32(clamping: Int64(linger.seconds * 1000))
        for path in inputs {
            let name = path == "-" ? "stdin" : path
            let fd = path == "-" ? STDIN_FILENO : open(path, O_RDONLY)
            guard fd >= 0 else {
                continuation.yield(.failed("cannot open \(path): \(String(cString: strerror(errno)))"))
                continue
            }
            defer { if path != "-" { close(fd) } }
            var parser = ReadingLineParser(format: format)
            var lineNumber = 0
            var carry: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                // Wait for input at most until the open batch's linger runs out, then send what there is.
                if !batch.isEmpty {
                    let waited = ContinuousClock.now - batchStarted
                    let left = max(0, lingerMillis - Int32(clamping: Int64(waited.seconds * 1000)))
                    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    if poll(&pfd, 1, left) == 0 {
                        emit()
                        continue
                    }
                }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    continuation.yield(.failed("cannot read \(name): \(String(cString: strerror(errno)))"))
                    break
                }
                _ = bytesRead.add(n, ordering: .relaxed)
                var start = 0
                func handle(_ line: ArraySlice<UInt8>) {
                    lineNumber += 1
                    totalLines += 1
                    linesRead.add(1, ordering: .relaxed)
                    let text = String(decoding: line, as: UTF8.self)
                    switch parser.parse(Substring(text)) {
                    case .reading(let reading):
                        if batch.isEmpty { batchStarted = .now }
                        batch.append(reading)
                        if batch.count >= batchSize { emit() }
                    case .skipped:
                        break
                    case .bad(let message):
                        badLines.add(1, ordering: .relaxed)
                        continuation.yield(.badLine(source: name, line: lineNumber, message: message))
                    }
                }
                if n == 0 {
                    if !carry.isEmpty { handle(carry[...]) }
                    break
                }
                for i in 0..<n where buffer[i] == UInt8(ascii: "\n") {
                    if carry.isEmpty {
                        handle(buffer[start..<i])
                    } else {
                        carry += buffer[start..<i]
                        handle(carry[...])
                        carry.removeAll(keepingCapacity: true)
                    }
                    start = i + 1
                }
                carry += buffer[start..<n]
            }
        }
        emit()
        continuation.finish()
    }
}
