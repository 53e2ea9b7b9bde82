import Foundation
import Synchronization

/// Starts a `Foundation.Process` while no other thread of this test process is starting one.
///
/// swift-corelibs-foundation's `Process.run()` is not safe to call from several threads at once on Linux
/// (swift-corelibs-foundation#4772, #4795, #4810): the suite's parallel tests, each starting sluiced, sluice,
/// psql or openssl, crashed the test process in `Process.run()` (a memcpy of a freed buffer) and in
/// libdispatch's event loop that watches the children. Launches are short, so taking turns costs nothing.
public enum ProcessLaunch {
    private static let lock = Mutex(())

    public static func run(_ process: Process) throws {
        try lock.withLock { _ in try process.run() }
    }
}
