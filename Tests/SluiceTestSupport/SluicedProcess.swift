import Foundation
import NIOConcurrencyHelpers

/// The real `sluiced` executable (from `$SLUICE_BIN_DIR`) as a child process, for tests that signal it.
public final class SluicedProcess: Sendable {
    private let process: Process
    private let stderr = NIOLockedValueBox("")
    private let stdout = NIOLockedValueBox("")
    private let exitStatus = NIOLockedValueBox<Int32?>(nil)
    /// Pipes read to their end (stdout, stderr): what the process wrote is all in `output` and `log`.
    private let pipesAtEnd = NIOLockedValueBox(0)

    /// Starts `sluiced` with `arguments` and waits for its `sluiced: listening on 127.0.0.1:PORT` line.
    /// Takes one of `DaemonSlots` first (given back when the process exits), which bounds the PostgreSQL
    /// connections the suite's daemons hold at once.
    public static func start(_ arguments: [String], environment: [String: String] = [:]) async throws -> (SluicedProcess, port: Int) {
        let slot = await DaemonSlot.take()
        let me: SluicedProcess
        do {
            me = try launch(arguments, environment: environment, slot: slot)
        } catch {
            slot.release()
            throw error
        }
        // A loaded machine (two cores, the whole suite in parallel) can take a while to start one.
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let log = me.log
            if let range = log.range(of: "sluiced: listening on 127.0.0.1:") {
                let digits = log[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits), log[range.upperBound...].dropFirst(digits.count).first == "\n" {
                    return (me, port)
                }
            }
            if me.exitStatus.withLockedValue({ $0 }) != nil {
                throw TestSetupError("sluiced exited before listening: \(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        me.kill()
        throw TestSetupError("sluiced did not print its listening line within 60 s: \(me.log)")
    }

    /// Starts `sluiced` with `arguments` (and extra environment variables) without waiting for anything.
    public static func launch(_ arguments: [String], environment: [String: String] = [:]) throws -> SluicedProcess {
        try launch(arguments, environment: environment, slot: nil)
    }

    static func launch(_ arguments: [String], environment: [String: String], slot: DaemonSlot?) throws -> SluicedProcess {
        guard let binDir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test, which builds sluiced")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binDir + "/sluiced")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let me = SluicedProcess(process: process)
        let pipe = Pipe()
        process.standardError = pipe
        let outPipe = Pipe()
        process.standardOutput = outPipe
        outPipe.fileHandleForReading.readabilityHandler = { [stdout = me.stdout, atEnd = me.pipesAtEnd] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                atEnd.withLockedValue { $0 += 1 }
            } else {
                stdout.withLockedValue { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
        pipe.fileHandleForReading.readabilityHandler = { [stderr = me.stderr, atEnd = me.pipesAtEnd] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                atEnd.withLockedValue { $0 += 1 }
            } else {
                stderr.withLockedValue { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
        process.terminationHandler = { [exitStatus = me.exitStatus] p in
            exitStatus.withLockedValue { $0 = p.terminationStatus }
            slot?.release()
        }
        try ProcessLaunch.run(process)
        return me
    }

    private init(process: Process) {
        self.process = process
    }

    public var log: String { stderr.withLockedValue { $0 } }
    public var output: String { stdout.withLockedValue { $0 } }
    public var pid: Int32 { process.processIdentifier }

    public func signal(_ signal: Int32) {
        Foundation.kill(process.processIdentifier, signal)
    }

    /// The exit status once the process ended, waiting up to `timeout`; by then `log` and `output` hold all it
    /// wrote (the exit can be seen before the pipes are read to their end: on a loaded machine a test read a
    /// log whose last line was cut). A child that keeps a pipe open (an embedded PostgreSQL) ends that wait
    /// after 2 s.
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = exitStatus.withLockedValue({ $0 }) {
                let drained = ContinuousClock.now + .seconds(2)
                while pipesAtEnd.withLockedValue({ $0 }) < 2, ContinuousClock.now < drained {
                    try await Task.sleep(for: .milliseconds(10))
                }
                return status
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSetupError("sluiced did not exit within \(timeout)")
    }

    /// Last resort, so a failing test leaves nothing running.
    public func kill() {
        if exitStatus.withLockedValue({ $0 }) == nil { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}
