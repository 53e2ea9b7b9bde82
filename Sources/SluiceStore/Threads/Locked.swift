import Foundation

/// A value guarded by a lock, shareable between the writer threads, NIO threads and tasks.
///
/// `@unchecked Sendable` is safe here: `value` is private and only ever read or written inside
/// `withLock`, which holds `lock` for the whole access, so no two threads touch it at once.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    /// Runs `body` with exclusive access to the value. Keep `body` short: it must never block or call out.
    @inline(__always)
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
