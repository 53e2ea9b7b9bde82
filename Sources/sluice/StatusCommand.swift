import ArgumentParser
import Foundation
import SluiceClient

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the status of one or several daemons, fetched concurrently.",
        discussion: """
            Asks each daemon's HTTP endpoint (sluiced --http) for GET /status, all at once, each under \
            --deadline. A daemon that is down or does not answer in time is shown as an error while the others \
            still show. Exit status: 0 every daemon answered, 1 some did not.

            Examples:
              sluice status
              sluice status --http 10.0.0.5:7879 --http 10.0.0.6:7879 --deadline 1
              sluice status --http 10.0.0.5:7879 --json | jq '.[].status.queue_depth_readings'
            """)

    @Option(
        name: .customLong("http"),
        help: ArgumentHelp("A daemon's metrics/status address; repeat for several.", valueName: "host:port"))
    var addresses: [String] = []

    @Option(help: "Seconds each daemon has to answer.")
    var deadline: Double = 2

    @Flag(help: "Print JSON: an array of {address, ok, status | error, elapsed_ms}.")
    var json = false

    func validate() throws {
        guard deadline > 0 else { throw ValidationError("--deadline must be positive") }
        _ = try endpoints()
    }

    private func endpoints() throws -> [Endpoint] {
        do {
            return try (addresses.isEmpty ? ["127.0.0.1:7879"] : addresses).map { try Endpoint(parsing: $0, defaultPort: 7879) }
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func run() async throws {
        let results = await StatusFetcher.fetchAll(try endpoints(), deadline: .milliseconds(Int64(deadline * 1000)))
        if json {
            await Console.shared.output(Self.json(results))
        } else {
            await Console.shared.output(Self.table(results))
        }
        if results.contains(where: { if case .failed = $0.outcome { true } else { false } }) { throw ExitCode(1) }
    }

    static func json(_ results: [DaemonStatus]) -> String {
        let entries = results.map { r -> String in
            let address = jsonString(r.address)
            let elapsed = Format.fixed(r.elapsed.seconds * 1000, 1)
            switch r.outcome {
            case .ok(let body, _):
                return "{\"address\": \(address), \"ok\": true, \"elapsed_ms\": \(elapsed), \"status\": \(body.trimmingCharacters(in: .whitespacesAndNewlines))}"
            case .failed(let message):
                return "{\"address\": \(address), \"ok\": false, \"elapsed_ms\": \(elapsed), \"error\": \(jsonString(message))}"
            }
        }
        return "[\n  " + entries.joined(separator: ",\n  ") + "\n]"
    }

    static func jsonString(_ s: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        let array = data.map { String(decoding: $0, as: UTF8.self) } ?? "[\"\"]"
        return String(array.dropFirst().dropLast())
    }

    static func table(_ results: [DaemonStatus]) -> String {
        let header = ["ADDRESS", "STATE", "UPTIME", "CONNS", "READINGS", "REJECTED", "QUEUE", "CREDIT", "P99 COMMIT", "DATABASE"]
        var rows: [[String]] = []
        var errors: [String] = []
        for r in results {
            switch r.outcome {
            case .ok(_, let s):
                rows.append([
                    r.address, "up" + (s.version.map { " (\($0))" } ?? ""),
                    s.uptimeSeconds.map { Format.duration($0) } ?? "-",
                    s.connections.map(Format.count) ?? "-",
                    s.readingsAccepted.map(Format.count) ?? "-",
                    s.readingsRejected.map(Format.count) ?? "-",
                    s.queueDepthReadings.map(Format.count) ?? "-",
                    s.creditHeldReadings.map(Format.count) ?? "-",
                    s.commitLatencyP99Ms.map { Format.fixed($0, 1) + " ms" } ?? "-",
                    s.database ?? "-",
                ])
            case .failed(let message):
                rows.append([r.address, "ERROR", "-", "-", "-", "-", "-", "-", "-", "-"])
                errors.append("\(r.address): \(message)")
            }
        }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 || i == 1 || i == cells.count - 1
                    ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        var out = [line(header)] + rows.map(line)
        if !errors.isEmpty { out += [""] + errors.map { "error: " + $0 } }
        return out.joined(separator: "\n")
    }
}
