import Foundation
import SluiceTestSupport
import Testing

/// `--help` is how a newcomer learns the tools: every command's help prints, exits 0, and reads as prose.
@Suite struct HelpTextTests {
    static let commands: [(binary: String, arguments: [String])] = [
        ("sluice", []), ("sluice", ["send"]), ("sluice", ["replay"]), ("sluice", ["bench"]), ("sluice", ["status"]),
        ("sluice", ["spool"]), ("sluice", ["spool", "inspect"]),
        ("sluiced", []), ("sluiced", ["serve"]), ("sluiced", ["token"]), ("sluiced", ["token", "create"]),
        ("sluiced", ["token", "list"]), ("sluiced", ["token", "revoke"]), ("sluiced", ["psql"]),
    ]

    /// A run of spaces inside a sentence is a layout slip in the source (an indented continuation line of a
    /// multi-line string), which the terminal shows as a hole in the text: spaces between a word and the
    /// lowercase word that continues the sentence. Columns aligned on purpose are spared: option and argument
    /// lines, a subcommand's description (capitalised) and an example's trailing `# comment`.
    static func holes(in help: String) -> [String] {
        let hole = try! NSRegularExpression(pattern: #"\S {3,}[a-z]"#)
        return help.split(separator: "\n").map(String.init).filter { line in
            let text = line.drop { $0 == " " }
            guard !text.hasPrefix("-"), !text.hasPrefix("<") else { return false }
            let body = String(text)
            return hole.firstMatch(in: body, range: NSRange(body.startIndex..., in: body)) != nil
        }
    }

    @Test func holeDetectionFindsTheSlipAndSparesAlignedColumns() {
        #expect(Self.holes(in: "  send                    Send readings").isEmpty)
        #expect(Self.holes(in: "  serve (default)         Run the ingest server").isEmpty)
        #expect(Self.holes(in: "  --tls-ca <pem>          libpq URL").isEmpty)
        #expect(Self.holes(in: "  sluiced serve --http off     # any free port").isEmpty)
        #expect(Self.holes(in: "readings are written and leave it             only once acknowledged") ==
            ["readings are written and leave it             only once acknowledged"])
    }

    @Test(arguments: commands.indices) func everyHelpPrintsAndReadsAsProse(_ index: Int) async throws {
        let (binary, arguments) = Self.commands[index]
        let process = try RunningProcess(try Binaries.path(binary), arguments + ["--help"], name: "\(binary) help")
        let status = try await process.waitForExit()
        let help = process.stdout + process.stderr
        let command = ([binary] + arguments).joined(separator: " ")
        #expect(status == 0, "\(command) --help exited \(status)")
        #expect(help.contains("USAGE:"), "\(command) --help: \(help)")
        #expect(Self.holes(in: help).isEmpty, "\(command) --help has holes in its text: \(Self.holes(in: help))")
    }
}
