import Foundation
import SluiceTestSupport
import Testing

/// The shipped unit file is one systemd accepts.
@Suite struct SystemdUnitTests {
    @Test func theUnitFilePassesSystemdAnalyzeVerify() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let unit = try String(contentsOf: root.appendingPathComponent("tools/systemd/sluiced.service"), encoding: .utf8)
        guard let binDir = ProcessInfo.processInfo.environment["SLUICE_BIN_DIR"] else {
            throw TestSetupError("SLUICE_BIN_DIR is not set: run the suite with tools/test")
        }
        // verify checks that ExecStart exists: point it at the binary this run built.
        let dir = NSTemporaryDirectory() + "sluice-unit-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sluiced.service"
        try unit.replacingOccurrences(of: "/usr/local/bin/sluiced", with: binDir + "/sluiced")
            .write(toFile: path, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
        process.arguments = ["verify", "--man=no", path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try ProcessLaunch.run(process)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "systemd-analyze verify: \(text)")
        #expect(!text.contains("sluiced.service"), "no warnings about the unit: \(text)")
        for key in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
            "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=sluice", "User=sluice", "TimeoutStopSec=", "ExecReload="]
        {
            #expect(unit.contains(key), "unit sets \(key)")
        }
    }
}
