import Foundation
import SluiceTestSupport
import Synchronization

/// Where `tools/test` put the built executables.
enum Binaries {
    static func path(_ name: String) throws -> String {
        guard let dir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test, which builds sluice and sluiced")
        }
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError("\(path) is not an executable: build the package first")
        }
        return path
    }
}

/// A child process with its stdout and stderr collected as they arrive.
final class RunningProcess: Sendable {
    let process: Process
    let name: String
    private let stdinPipe = Pipe()
    private let out = Mutex("")
    private let err = Mutex("")
    private let exit = Mutex<(Int32?, [CheckedContinuation<Int32, Never>])>((nil, []))
    /// Pipes read to their end (stdout, stderr).
    private let pipesAtEnd = Mutex(0)

    /// `slot`: given back when the process exits (or if it cannot be started).
    init(
        _ executable: String, _ arguments: [String], name: String, slot: DaemonSlot? = nil, environment: [String: String] = [:]
    ) throws {
        self.name = name
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardInput = stdinPipe
        process.standardOutput = outPipe
        process.standardError = errPipe
        outPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                self?.pipesAtEnd.withLock { $0 += 1 }
            } else {
                self?.out.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                self?.pipesAtEnd.withLock { $0 += 1 }
            } else {
                self?.err.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
        }
        process.terminationHandler = { [weak self] p in
            slot?.release()
            guard let self else { return }
            let waiters = self.exit.withLock { state in
                state.0 = p.terminationStatus
                defer { state.1 = [] }
                return state.1
            }
            for w in waiters { w.resume(returning: p.terminationStatus) }
        }
        do {
            try ProcessLaunch.run(process)
        } catch {
            slot?.release()
            throw error
        }
    }

    /// Starts a `sluiced` once one of `DaemonSlots` is free (which bounds the suite's PostgreSQL connections).
    static func sluiced(
        _ arguments: [String], name: String = "sluiced", environment: [String: String] = [:]
    ) async throws -> RunningProcess {
        let slot = await DaemonSlot.take()
        let path: String
        do { path = try Binaries.path("sluiced") } catch {
            slot.release()
            throw error
        }
        return try RunningProcess(path, arguments, name: name, slot: slot, environment: environment)
    }

    /// A test that fails half way must not leave its daemon running.
    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    var stdout: String { out.withLock { $0 } }
    var stderr: String { err.withLock { $0 } }
    var pid: Int32 { process.processIdentifier }
    var exitCode: Int32? { exit.withLock { $0.0 } }

    /// Waits for the process to end; returns its exit status.
    func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        // Poll rather than hang a test for ever if the child does not end.
        while ContinuousClock.now < deadline {
            if let code = exitCode {
                // The exit can be seen before the pipes are read to their end (a loaded machine cut a JSON log's
                // last line): wait for both, for at most 1 s (a child of the process may keep one open).
                let drained = ContinuousClock.now + .seconds(1)
                while pipesAtEnd.withLock({ $0 }) < 2, ContinuousClock.now < drained {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                return code
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(SIGKILL)
        throw TestSetupError("\(name) did not exit within \(timeout)\nstdout:\n\(stdout)\nstderr:\n\(stderr.suffix(4000))")
    }

    /// Waits until stderr matches `pattern` (a regular expression); returns the first capture group.
    @discardableResult
    func waitForStderr(_ pattern: String, timeout: Duration = .seconds(30)) async throws -> String {
        let regex = try NSRegularExpression(pattern: pattern)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = stderr
            if let m = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) {
                let range = m.numberOfRanges > 1 ? m.range(at: 1) : m.range
                return String(text[Range(range, in: text)!])
            }
            if exitCode != nil {
                throw TestSetupError("\(name) exited (\(exitCode!)) before printing /\(pattern)/:\n\(text.suffix(4000))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSetupError("\(name) did not print /\(pattern)/ within \(timeout):\n\(stderr.suffix(4000))")
    }

    /// Writes to the child's stdin from a thread of our own (a pipe write can block).
    func writeStdin(_ text: String) async {
        let handle = stdinPipe.fileHandleForWriting
        await onOwnThread { handle.write(Data(text.utf8)) }
    }

    func closeStdin() { try? stdinPipe.fileHandleForWriting.close() }

    func kill(_ signal: Int32) {
        if exitCode == nil { Foundation.kill(pid, signal) }
    }
}

/// A `sluiced` process on its own state directory, against a test database.
struct Sluiced {
    let process: RunningProcess
    let port: Int
    let httpPort: Int
    let databaseURL: String
    let stateDir: String

    static func start(databaseURL: String, port: Int = 0, stateDir: String? = nil) async throws -> Sluiced {
        let dir = stateDir ?? (NSTemporaryDirectory() + "sluiced-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let process = try await RunningProcess.sluiced(
            [
                "--listen", "127.0.0.1:\(port)", "--database-url", databaseURL, "--http", "127.0.0.1:0",
                "--state-dir", dir, "--log-level", "info",
            ], name: "sluiced")
        let listening = try await process.waitForStderr(#"sluiced: listening on 127\.0\.0\.1:(\d+)"#, timeout: .seconds(60))
        let http = try await process.waitForStderr(#"http://127\.0\.0\.1:(\d+)/status"#)
        return Sluiced(process: process, port: Int(listening)!, httpPort: Int(http)!, databaseURL: databaseURL, stateDir: dir)
    }

    /// Stops it for good: SIGTERM, then SIGKILL if it lingers.
    func stop() async {
        process.kill(SIGTERM)
        if (try? await process.waitForExit(timeout: .seconds(10))) == nil { process.kill(SIGKILL) }
        try? FileManager.default.removeItem(atPath: stateDir)
    }

    func rowCount(distinct: Bool = false) async throws -> Int {
        let url = databaseURL
        let sql = distinct
            ? "SELECT count(*) FROM (SELECT DISTINCT device_id, metric, time FROM readings) d"
            : "SELECT count(*) FROM readings"
        return try await onOwnThread { try TestConnection(url: url).scalar(sql) }
    }
}

/// `sluice` with arguments, against `server`.
func sluice(_ arguments: [String]) throws -> RunningProcess {
    try RunningProcess(try Binaries.path("sluice"), arguments, name: "sluice \(arguments.first ?? "")")
}

/// CSV lines `device,metric,timestamp,value` for readings `range`: reading i is device i % devices at
/// `base` + i / devices seconds, so every reading of every range is a distinct (device, time).
func csvLines(_ range: Range<Int>, devices: Int = 20, base: Int64 = csvBase) -> String {
    var out = ""
    out.reserveCapacity(range.count * 40)
    for i in range {
        out += "dev-\(i % devices),temp_c,\(base + Int64(i / devices)),\(Double(2_000 + (i % 97)) / 100)\n"
    }
    return out
}

/// A day ago: inside the server's accepted window (7 days back), with room for a day of readings per device.
let csvBase = Int64(Date().timeIntervalSince1970) - 86_400

func temporaryFile(_ contents: String, suffix: String = ".csv") throws -> String {
    let path = NSTemporaryDirectory() + "sluice-e2e-\(UUID().uuidString)\(suffix)"
    try contents.write(toFile: path, atomically: false, encoding: .utf8)
    return path
}
