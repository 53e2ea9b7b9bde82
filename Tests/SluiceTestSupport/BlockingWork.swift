import Foundation

/// Runs blocking work (libpq, pipe writes) on a new thread and waits for it without blocking the pool.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: try work()) } catch { continuation.resume(throwing: error) }
        }
        thread.start()
    }
}

public func onOwnThread(_ work: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            work()
            continuation.resume()
        }
        thread.start()
    }
}

/// `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` inside an open transaction, held on a thread of its own until
/// released: PostgreSQL is up but every write (and read) of the table waits.
public final class TableLock: Sendable {
    private let release = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    public static func hold(url: String, table: String) async throws -> TableLock {
        try await hold(url: url, taking: ["BEGIN", "LOCK TABLE \(table) IN ACCESS EXCLUSIVE MODE"], releasing: ["ROLLBACK"])
    }

    /// Holds PostgreSQL advisory lock `key` (session level) until `release()`.
    public static func holdAdvisory(url: String, key: Int) async throws -> TableLock {
        try await hold(url: url, taking: ["SELECT pg_advisory_lock(\(key))"], releasing: ["SELECT pg_advisory_unlock(\(key))"])
    }

    /// Runs `taking` on a connection of its own thread, then `releasing` once `release()` is called.
    public static func hold(url: String, taking: [String], releasing: [String]) async throws -> TableLock {
        let lock = TableLock()
        try await withCheckedThrowingContinuation { (locked: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                do {
                    let connection = try TestConnection(url: url)
                    for statement in taking { try connection.query(statement) }
                    locked.resume()
                    lock.release.wait()
                    for statement in releasing { _ = try? connection.query(statement) }
                } catch {
                    locked.resume(throwing: error)
                }
                lock.done.signal()
            }
            thread.start()
        }
        return lock
    }

    public func release() async {
        release.signal()
        await onOwnThread { [done] in done.wait() }
    }
}
