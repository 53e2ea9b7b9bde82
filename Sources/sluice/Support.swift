import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

enum ProcessEnvironment {
    static func get(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

/// Writes to stderr and stdout, keeping a TTY progress line at the bottom intact.
actor Console {
    static let shared = Console()

    nonisolated let stderrIsTTY = isatty(STDERR_FILENO) == 1
    private var statusLine: String?

    /// A message on stderr (above the progress line on a TTY).
    func note(_ text: String) {
        if stderrIsTTY, statusLine != nil { write("\r\u{1B}[2K", to: STDERR_FILENO) }
        write(text + "\n", to: STDERR_FILENO)
        if stderrIsTTY, let line = statusLine { write(line, to: STDERR_FILENO) }
    }

    /// Replaces the progress line (TTY) or prints it as a plain line.
    func progress(_ text: String) {
        if stderrIsTTY {
            statusLine = text
            write("\r\u{1B}[2K" + text, to: STDERR_FILENO)
        } else {
            write(text + "\n", to: STDERR_FILENO)
        }
    }

    /// Ends the progress line so what follows starts on a fresh line.
    func endProgress() {
        if stderrIsTTY, statusLine != nil { write("\n", to: STDERR_FILENO) }
        statusLine = nil
    }

    /// Results for scripts: stdout.
    func output(_ text: String) {
        write(text + "\n", to: STDOUT_FILENO)
    }

    private func write(_ text: String, to fd: Int32) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }
}

/// Number formatting for tables and progress lines.
enum Format {
    static func count(_ n: Int) -> String {
        let digits = String(abs(n))
        var out = ""
        for (i, c) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + String(out.reversed())
    }

    static func fixed(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }

    static func rate(_ n: Double) -> String { count(Int(n.rounded())) }

    static func millis(_ seconds: Double) -> String {
        seconds < 0.01 ? fixed(seconds * 1000, 2) + " ms" : fixed(seconds * 1000, 1) + " ms"
    }

    static func duration(_ seconds: Double) -> String {
        seconds < 60 ? fixed(seconds, 1) + " s" : "\(Int(seconds) / 60) min \(Int(seconds) % 60) s"
    }

    static func microsAsRFC3339(_ micros: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(micros) / 1e6)
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }

    /// `[=====>      ]` for a fraction 0…1.
    static func bar(_ fraction: Double, width: Int = 24) -> String {
        let f = min(max(fraction, 0), 1)
        let filled = Int((f * Double(width)).rounded(.down))
        let head = filled < width ? ">" : ""
        return "[" + String(repeating: "=", count: filled) + head
            + String(repeating: " ", count: max(0, width - filled - head.count)) + "]"
    }
}

/// Unix time now, in microseconds.
func nowMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
}
