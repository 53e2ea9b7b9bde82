import Logging
import NIOConcurrencyHelpers
import SluiceStore

/// The device registry (device → site, calibration, unit) as the pipeline sees it: a cache loaded at start
/// and reloaded in the background, so ingestion never waits on a full reload.
///
/// Devices missing from the cache are looked up when a batch names them, each lookup under a deadline; a
/// lookup that fails or runs late leaves those devices "partially enriched" (flagged on their rows, written
/// anyway) and is retried on the next batch. Devices the registry does not know are remembered as unknown
/// until the next reload, so they cost one lookup, not one per batch.
final class DeviceRegistryCache: Sendable {
    private struct State {
        var known: [String: DeviceInfo] = [:]
        var unknown: Set<String> = []
    }

    private let reader: DeviceRegistryReader
    private let state = NIOLockedValueBox(State())
    private let deadline: Double
    private let logger: Logger

    init(reader: DeviceRegistryReader, deadline: Double, logger: Logger) {
        self.reader = reader
        self.deadline = deadline
        self.logger = logger
    }

    /// Reloads the whole registry; on failure the cache keeps what it had.
    func reload() async {
        do {
            let all = try await reader.loadAll()
            state.withLockedValue {
                $0.known = all
                $0.unknown = []
            }
            logger.debug("device registry loaded", metadata: ["devices": "\(all.count)"])
        } catch {
            logger.warning("device registry reload failed; keeping the cached copy", metadata: ["error": "\(error)"])
        }
    }

    /// Reloads every `interval` seconds until cancelled.
    func refreshForever(every interval: Double) async {
        while !Task.isCancelled {
            do { try await Task.sleep(nanoseconds: UInt64(interval * 1e9)) } catch { return }
            await reload()
        }
    }

    /// Registry entries for `deviceIDs`; `partial` holds the devices whose lookup failed or timed out.
    func resolve(_ deviceIDs: Set<String>) async -> (info: [String: DeviceInfo], partial: Set<String>) {
        var info: [String: DeviceInfo] = [:]
        let misses = state.withLockedValue { s -> [String] in
            var misses: [String] = []
            for id in deviceIDs {
                if let entry = s.known[id] {
                    info[id] = entry
                } else if !s.unknown.contains(id) {
                    misses.append(id)
                }
            }
            return misses
        }
        guard !misses.isEmpty else { return (info, []) }
        let reader = self.reader
        let found = await withDeadline(seconds: deadline) { try await reader.lookup(misses) }
        guard let found else {
            logger.debug("device registry lookup failed or timed out", metadata: ["devices": "\(misses.count)"])
            return (info, Set(misses))
        }
        state.withLockedValue { s in
            for id in misses {
                if let entry = found[id] {
                    s.known[id] = entry
                } else {
                    s.unknown.insert(id)
                }
            }
        }
        info.merge(found) { a, _ in a }
        return (info, [])
    }
}

/// Runs `operation` and returns its result, or nil if it throws or takes longer than `seconds`. The
/// operation is not waited for after the deadline (a blocked registry connection must not hold a batch).
func withDeadline<T: Sendable>(
    seconds: Double, _ operation: @escaping @Sendable () async throws -> T
) async -> T? {
    await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        let resumed = NIOLockedValueBox(false)
        @Sendable func finish(_ value: T?) -> Bool {
            let first = resumed.withLockedValue { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { continuation.resume(returning: value) }
            return first
        }
        let timer = Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            if !Task.isCancelled { _ = finish(nil) }
        }
        Task {
            let value = try? await operation()
            timer.cancel()
            _ = finish(value)
        }
    }
}
