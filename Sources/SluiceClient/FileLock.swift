import Foundation

/// An exclusive `flock` a process holds on a file for the rest of its life, with its PID written into the file
/// so that a second process can say who is in the way. Shared by the producer state file and the spool: two
/// processes as one producer would hand out the same seqs and have each other's batches deduplicated away.
enum FileLock {
    /// Lock files this process holds, by path; their descriptors stay open (and locked) until it exits.
    private static let held = NSLock()
    /// Guarded by `held`: every access is between `held.lock()` and `held.unlock()` in `acquire`.
    nonisolated(unsafe) private static var heldPaths: [String: Int32] = [:]

    /// Takes the lock (once per process: a second call for the same path succeeds at once). `busy` gets
    /// "process N" (or "another process") and makes the error to throw when someone else holds it.
    static func acquire(
        _ lockPath: String, error: (String) -> ClientError, busy: (String) -> ClientError
    ) throws(ClientError) {
        held.lock()
        defer { held.unlock() }
        if heldPaths[lockPath] != nil { return }
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw error("cannot open its lock file \(lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            let pid = holder(fd)
            close(fd)
            guard reason == EWOULDBLOCK else {
                throw error("cannot lock \(lockPath): \(String(cString: strerror(reason)))")
            }
            throw busy(pid.map { "process \($0)" } ?? "another process")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, text, text.count, 0)
        heldPaths[lockPath] = fd
    }

    /// The PID a lock file names, if another process holds its lock now (nil if free or unreadable).
    static func holder(ofLockedFile lockPath: String) -> Int? {
        let fd = open(lockPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard flock(fd, LOCK_SH | LOCK_NB) != 0, errno == EWOULDBLOCK else {
            _ = flock(fd, LOCK_UN)
            return nil
        }
        return holder(fd)
    }

    private static func holder(_ fd: Int32) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        return Int(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
