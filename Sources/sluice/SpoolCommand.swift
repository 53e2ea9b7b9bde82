import ArgumentParser
import Foundation
import NIOPosix
import SluiceClient

/// `sluice spool …`: looking at a spool that `sluice send --spool` writes.
struct SpoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "Look at a spool written by sluice send --spool.",
        subcommands: [SpoolInspectCommand.self])
}

struct SpoolInspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List what a spool holds: producer, segments, batches, readings, input position, damage.",
        discussion: """
            Reads the spool without locking or changing it, so it can run while a sender uses the spool. \
            Batches leave the spool when their whole segment is acknowledged, so a segment still listed may \
            hold batches already acknowledged (they are resent after a restart and acknowledged as \
            duplicates: never written twice). "input taken to line N" is where a restarted sender's input \
            must begin (line N+1).

            Examples:
              sluice spool inspect /var/lib/gw/spool
              sluice spool inspect --json /var/lib/gw/spool | jq .input_position
            """)

    @Argument(help: "The spool directory (sluice send --spool DIR).")
    var directory: String

    @Flag(help: "One JSON object on stdout, for scripts.")
    var json = false

    func run() async throws {
        let directory = directory
        let inspection: SpoolInspection
        do {
            // Reading every segment is blocking file I/O: on NIO's thread pool, not the cooperative pool.
            inspection = try await NIOThreadPool.singleton.runIfActive { try SpoolInspection.inspect(directory: directory) }
        } catch {
            await Console.shared.note("sluice: \(error)")
            throw ExitCode(2)
        }
        await Console.shared.output(json ? Self.json(inspection) : Self.text(inspection))
        if !inspection.problems.isEmpty { throw ExitCode(1) }
    }

    static func text(_ i: SpoolInspection) -> String {
        var lines = ["spool \(i.directory)"]
        if let p = i.producer {
            lines.append("  producer          \(p.producer) (next seq \(p.nextSeq))")
        } else {
            lines.append("  producer          none yet (no producer.json)")
        }
        lines.append("  in use by         \(i.lockedBy.map { "process \($0)" } ?? "nobody")")
        lines.append(
            "  holds             \(Format.count(i.readings)) readings in \(Format.count(i.batches)) batches, \(i.segments.count) segments, \(ByteSize.describe(i.bytes))")
        lines.append("  input taken to    line \(i.inputPosition)")
        for s in i.segments {
            let seqs = s.firstSeq.map { "seqs \($0)–\(s.lastSeq ?? $0)" } ?? "no batches"
            lines.append("    \(s.name)  \(ByteSize.describe(s.bytes))  \(Format.count(s.batches)) batches  \(Format.count(s.readings)) readings  \(seqs)")
        }
        if i.problems.isEmpty {
            lines.append("  problems          none")
        } else {
            lines.append("  problems (a sender opening the spool recovers past them, keeping the rest):")
            for p in i.problems { lines.append("    \(p)") }
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ i: SpoolInspection) -> String {
        var object: [String: Any] = [
            "directory": i.directory, "segments": i.segments.count, "batches": i.batches, "readings": i.readings,
            "bytes": i.bytes, "input_position": i.inputPosition, "problems": i.problems.map(\.description),
        ]
        if let p = i.producer {
            object["producer_id"] = "\(p.producer)"
            object["next_seq"] = p.nextSeq
        }
        if let pid = i.lockedBy { object["locked_by"] = pid }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
