import Dispatch
import Foundation

/// The reference every throughput figure is a ratio of: binary COPY of pre-encoded rows into `readings`, one
/// transaction per payload, over N connections on threads of their own — no queue, no dedup, no encoding
/// during the run. `sluice-store-bench` and the end-to-end benchmark use it.
public enum RawCopyReference {
    /// The complete binary COPY payload (header, rows, trailer) for `series`, in the column order of
    /// `ReadingsCopyEncoder.copyStatement` (the writer pool's own encoding).
    public static func encodePayload(_ series: [RowSeries]) -> [UInt8] {
        let buffer = CopyBuffer(capacity: 1 << 16)
        let encoder = ReadingsCopyEncoder()
        var payload: [UInt8] = []
        buffer.append(bytes: CopyBinaryFormat.header)
        for item in series {
            encoder.encode(item, into: buffer, flushThreshold: Int.max / 2) { _ in }
        }
        buffer.append(bytes: CopyBinaryFormat.trailer)
        payload.append(contentsOf: buffer.bytes)
        return payload
    }

    /// Seconds one thread takes to encode `series` the way a writer does (reused buffer, flushed every
    /// 512 KiB, here into nothing): the client-side CPU cost of the pool's COPY.
    public static func encodingSeconds(_ series: [RowSeries]) -> Double {
        let buffer = CopyBuffer(capacity: 1 << 20)
        let encoder = ReadingsCopyEncoder()
        var checksum = 0
        let started = DispatchTime.now()
        for item in series {
            encoder.encode(item, into: buffer, flushThreshold: 512 * 1024) { full in
                checksum &+= full.count
                full.removeAll()
            }
        }
        checksum &+= buffer.count
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(checksum > 0 || series.isEmpty)
        return elapsed
    }

    /// Writes every payload, each in its own transaction (BEGIN; COPY; COMMIT), spreading them round-robin
    /// over `connections` connections, and returns the wall-clock seconds from the first BEGIN to the last
    /// COMMIT. Connections are opened before the clock starts.
    public static func write(payloads: [[UInt8]], databaseURL: String, connections: Int) async throws -> Double {
        let count = max(1, connections)
        let shares = (0..<count).map { index in stride(from: index, to: payloads.count, by: count).map { payloads[$0] } }
        let ready = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        let failure = Locked<(any Error)?>(nil)
        let finished = DispatchGroup()
        for (index, share) in shares.enumerated() {
            ready.enter()
            finished.enter()
            let thread = Thread {
                defer { finished.leave() }
                let connection: PGConnection
                do {
                    connection = try PGConnection(url: databaseURL, applicationName: "sluice-raw-copy")
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                    ready.leave()
                    return
                }
                ready.leave()
                go.wait()
                do {
                    for payload in share {
                        try connection.execute("BEGIN")
                        try connection.copyIn(ReadingsCopyEncoder.copyStatement) { sink in
                            try payload.withUnsafeBytes { try sink.send($0) }
                        }
                        try connection.execute("COMMIT")
                    }
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                }
            }
            thread.name = "sluice-raw-copy-\(index)"
            thread.start()
        }
        return try await OwnThread.run(name: "sluice-raw-copy-clock") {
            ready.wait()
            let started = DispatchTime.now()
            for _ in 0..<count { go.signal() }
            finished.wait()
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            if let error = failure.withLock({ $0 }) {
                throw (error as? PGError)?.storeError ?? error
            }
            return elapsed
        }
    }
}
