import Foundation

/// How many `sluiced` processes the test process runs at once.
///
/// Swift Testing runs every test concurrently, and each daemon holds PostgreSQL connections (its writers, the
/// admin connection, the device registry's): unbounded, a full run once went past the test cluster's
/// max_connections ("sorry, too many clients already"). Daemon-spawning helpers take a slot before they launch
/// and give it back when the process exits, so at most `limit` (SLUICE_TEST_MAX_DAEMONS, default 6) run at
/// once; tools/test sizes the cluster for that plus the in-process servers and pools (see its comment).
/// A test never needs more daemons at once than the limit, so waiting cannot deadlock.
public actor DaemonSlots {
    public static let shared = DaemonSlots(
        limit: ProcessInfo.processInfo.environment["SLUICE_TEST_MAX_DAEMONS"].flatMap { Int($0) }.map { max(3, $0) } ?? 6)

    public let limit: Int
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(limit: Int) {
        self.limit = limit
        available = limit
    }

    /// Waits for a free slot and takes it.
    public func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Gives a slot back (from any thread, e.g. a process termination handler).
    public nonisolated func release() {
        Task { await self.releaseNow() }
    }

    private func releaseNow() {
        if waiters.isEmpty {
            available = min(limit, available + 1)
        } else {
            waiters.removeFirst().resume()
        }
    }
}

/// Releases a slot exactly once (termination handler, or a launch that failed).
public final class DaemonSlot: Sendable {
    private let released = NSLock()
    nonisolated(unsafe) private var done = false

    /// Takes a slot from `DaemonSlots.shared`.
    public static func take() async -> DaemonSlot {
        await DaemonSlots.shared.acquire()
        return DaemonSlot()
    }

    public func release() {
        let first = released.withLock {
            defer { done = true }
            return !done
        }
        if first { DaemonSlots.shared.release() }
    }
}
