import ArgumentParser
import Foundation
import SluiceClient
import Synchronization

/// The part `send` and `replay` share: one client, its events turned into messages, a progress display,
/// and the final summary and exit code.
///
/// Exit codes: 0 every reading read was acknowledged as written; 1 some input was rejected (unreadable
/// lines, readings the server dead-lettered, batches it refused) but everything else landed; 2 some readings
/// are not acknowledged (gave up after --timeout, or an error retrying cannot fix, like a refused token);
/// 128 + the signal's number (130 SIGINT, 143 SIGTERM) when interrupted, whatever was acknowledged.
final class Delivery: Sendable {
    let client: SluiceClient
    private let started = ContinuousClock.now
    private let notes = Mutex(Notes())
    /// The task turning client events into notes; `finish` waits for it so the summary lists every rejection.
    private let eventWatcher = Mutex<Task<Void, Never>?>(nil)
    private let command: String

    private struct Notes {
        var rejections: [String] = []
        var moreRejections = 0
        var badLines: [String] = []
        var moreBadLines = 0
        var inputFailures: [String] = []
    }

    static let maxListed = 100

    init(command: String, options: ConnectionOptions, batchSize: Int, stateFile: String?, spool: SpoolConfiguration?) async throws {
        self.command = command
        let configuration = SluiceClientConfiguration(
            endpoints: try options.endpoints(), token: options.resolvedToken,
            producer: stateFile.map { .stateFile($0) } ?? .ephemeral, maxBatchReadings: batchSize,
            compression: !options.noCompression, clientName: "sluice-cli", tls: options.tls.configuration, spool: spool)
        client = try await SluiceClient(configuration: configuration, logger: options.logger())
        if let recovery = client.spoolRecovery, let spool {
            await Self.reportRecovery(recovery, directory: spool.directory, stateFile: stateFile)
        }
    }

    /// What the spool held at start: the operator learns of an earlier run's leftovers and of any damage first.
    private static func reportRecovery(_ r: SpoolRecovery, directory: String, stateFile: String?) async {
        let console = Console.shared
        if let stateFile {
            await console.note("sluice: --spool \(directory) keeps the producer identity; --state-file \(stateFile) is not used (it only seeds a new spool)")
        }
        for problem in r.problems { await console.note("sluice: spool \(directory): recovered past a problem: \(problem)") }
        if r.batches > 0 {
            await console.note(
                "sluice: spool \(directory): resending \(Format.count(r.readings)) readings in \(r.batches) batches an earlier run left unacknowledged (\(ByteSize.describe(r.bytes)), recovered in \(Format.millis(r.duration.seconds)))")
        }
        if r.inputPosition > 0 {
            await console.note(
                "sluice: spool \(directory): input taken to line \(r.inputPosition) by earlier runs: this input is taken as continuing from line \(r.inputPosition + 1)")
        }
    }

    /// Turns client events into messages until the client closes.
    func watchEvents() -> Task<Void, Never> {
        let watcher = Task {
            var disconnectedSince: ContinuousClock.Instant?
            for await event in client.events {
                switch event {
                case .connected(let endpoint, let session, _):
                    if let since = disconnectedSince {
                        await Console.shared.note(
                            "sluice: reconnected to \(endpoint) (session \(session)) after \(Format.duration((ContinuousClock.now - since).seconds)); resending unacknowledged batches")
                        disconnectedSince = nil
                    }
                case .disconnected(let endpoint, let reason, let retryIn):
                    if disconnectedSince == nil {
                        disconnectedSince = .now
                        await Console.shared.note(
                            "sluice: connection to \(endpoint) lost or refused: \(reason); retrying (next in \(Format.millis(retryIn.seconds)))")
                    }
                case .acked(let ack):
                    for r in ack.rejections { record(rejection: describe(r, seq: ack.seq)) }
                    let unlisted = ack.rejected - ack.rejections.count
                    if unlisted > 0 {
                        record(rejection: "batch \(ack.seq): \(unlisted) more readings rejected (the server lists the first few)")
                    }
                case .rejected(let rejection):
                    record(
                        rejection: "batch \(rejection.seq) (\(rejection.readings) readings) refused whole: \(rejection.code): \(rejection.message)")
                case .error(let error):
                    await Console.shared.note("sluice: \(error)")
                }
            }
        }
        eventWatcher.withLock { $0 = watcher }
        return watcher
    }

    private func describe(_ r: ReadingRejection, seq: UInt64) -> String {
        var text = "batch \(seq) reading \(r.index)"
        if let reading = r.reading {
            text += " (\(reading.deviceID) \(reading.metric) at \(Format.microsAsRFC3339(reading.timeMicros)) value \(reading.value))"
        }
        return text + ": \(r.code): \(r.reason)"
    }

    private func record(rejection: String) {
        notes.withLock { n in
            if n.rejections.count < Self.maxListed { n.rejections.append(rejection) } else { n.moreRejections += 1 }
        }
    }

    /// Reports a bad input line at once and remembers it for the summary.
    func badLine(source: String, line: Int, message: String) async {
        let text = "\(source):\(line): \(message); line skipped"
        let print = notes.withLock { n in
            if n.badLines.count < Self.maxListed {
                n.badLines.append(text)
                return true
            }
            n.moreBadLines += 1
            return false
        }
        if print { await Console.shared.note("sluice: " + text) }
    }

    func inputFailed(_ message: String) async {
        notes.withLock { $0.inputFailures.append(message) }
        await Console.shared.note("sluice: \(message)")
    }

    /// Redraws progress every `interval` until cancelled.
    func showProgress(every interval: Duration, reader: InputReader?) -> Task<Void, Never> {
        Task {
            var last = (ContinuousClock.now, 0)
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                let s = await client.statistics
                let now = ContinuousClock.now
                let rate = Double(s.readingsAcked - last.1) / max((now - last.0).seconds, 0.001)
                last = (now, s.readingsAcked)
                var line = "\(command): "
                if let reader, let total = reader.totalBytes, total > 0 {
                    // Done = acknowledged share of the lines read so far, times the share of the input read.
                    let read = Double(reader.bytesRead.load(ordering: .relaxed)) / Double(total)
                    let lines = reader.linesRead.load(ordering: .relaxed)
                    let fraction = read * Double(s.readingsAcked) / Double(max(1, lines - reader.badLines.load(ordering: .relaxed)))
                    line += Format.bar(fraction) + " \(Int(min(fraction, 1) * 100))%  "
                }
                line += "sent \(Format.count(s.readingsSent))  acked \(Format.count(s.readingsAcked))  "
                line += "\(Format.rate(rate))/s  credit waits \(s.creditWaits) (\(Format.duration(s.creditWaitSeconds)))"
                if s.spooled {
                    line += "  spool \(Format.count(s.spoolReadings)) unacked (\(ByteSize.describe(s.spoolBytes)))"
                    if s.spoolFull { line += " full, input paused" }
                    if s.spoolDroppedReadings > 0 { line += ", \(Format.count(s.spoolDroppedReadings)) dropped" }
                }
                if s.waitingForCredit { line += "  waiting for credit" }
                if !s.connected { line += "  disconnected, reconnecting" }
                await Console.shared.progress(line)
            }
        }
    }

    /// Why a run stopped before its input ended: the signal, and the state file a re-run would continue from.
    struct Interruption {
        var signal: Int32
        var stateFile: String?
    }

    /// Flushes and closes the client, prints the summary, and returns the exit code (128 + the signal's
    /// number when `interruption` is given, whatever was acknowledged).
    func finish(
        readingsRead: Int, timeout: Duration?, quiet: Bool, progress: Task<Void, Never>?, interruption: Interruption? = nil
    ) async -> Int32 {
        var fatal: String?
        do {
            try await client.close(timeout: timeout)
        } catch {
            fatal = "\(error)"
        }
        // Closing ends the event stream: once the watcher has read it to the end, every ack's rejections
        // are in the notes (without this wait, a short run could print its summary before them).
        if let watcher = eventWatcher.withLock({ $0 }) { await watcher.value }
        progress?.cancel()
        let s = await client.statistics
        let elapsed = (ContinuousClock.now - started).seconds
        await Console.shared.endProgress()
        let n = notes.withLock { $0 }
        let badLines = n.badLines.count + n.moreBadLines
        let unacked = s.readingsOutstanding
        var lines: [String] = []
        lines.append(
            "\(command): \(Format.count(readingsRead)) readings read, \(Format.count(s.readingsAcked)) acknowledged in \(Format.duration(elapsed)) (\(Format.rate(Double(s.readingsAcked) / max(elapsed, 0.001))) readings/s)")
        lines.append("  written           \(Format.count(s.readingsAccepted))")
        lines.append("  dead-lettered     \(Format.count(s.readingsRejected))")
        lines.append("  refused batches   \(s.batchesRejected) (\(Format.count(s.readingsInRejectedBatches)) readings)")
        lines.append("  bad input lines   \(Format.count(badLines))")
        lines.append("  unacknowledged    \(Format.count(unacked))")
        lines.append("  batches           \(Format.count(s.batchesSent)) sent, \(s.batchesResent) resent, \(s.batchesDuplicate) acked as duplicates")
        if s.spooled {
            lines.append(
                "  spool             \(Format.count(s.spoolReadings)) readings in \(s.spoolBatches) batches unacknowledged, \(ByteSize.describe(s.spoolBytes)) on disk; input taken to line \(s.spoolInputPosition)")
            if s.spoolDroppedReadings > 0 || s.spoolUnreadableBatches > 0 {
                lines.append(
                    "  spool dropped     \(Format.count(s.spoolDroppedReadings)) readings in \(s.spoolDroppedBatches) batches (--spool-drop-oldest), never sent by this run; \(s.spoolUnreadableBatches) batches unreadable")
            }
            if s.spoolDroppedEarlierRunReadings > 0 {
                lines.append(
                    "                    of those, \(Format.count(s.spoolDroppedEarlierRunReadings)) readings were spooled by an earlier run, which may have delivered them")
            }
        }
        lines.append("  reconnects        \(s.reconnects)")
        lines.append("  credit waits      \(s.creditWaits) (\(Format.duration(s.creditWaitSeconds)))")
        if s.batchWireReadings > 0 {
            lines.append(
                "  wire bytes        \(Format.fixed(Double(s.batchWireBytes) / Double(s.batchWireReadings), 2)) per reading")
        }
        if !quiet || interruption != nil || fatal != nil || unacked > 0 || s.readingsRejected > 0 || s.batchesRejected > 0
            || badLines > 0
        {
            await Console.shared.output(lines.joined(separator: "\n"))
        }
        if !n.rejections.isEmpty {
            await Console.shared.note("rejected by the server:")
            for r in n.rejections { await Console.shared.note("  \(r)") }
            if n.moreRejections > 0 { await Console.shared.note("  … and \(n.moreRejections) more") }
        }
        if badLines > 0 {
            await Console.shared.note("bad input lines (skipped):")
            for b in n.badLines { await Console.shared.note("  \(b)") }
            if n.moreBadLines > 0 { await Console.shared.note("  … and \(n.moreBadLines) more") }
        }
        if let fatal, unacked == 0 || !fatal.hasPrefix("gave up waiting") { await Console.shared.note("sluice: \(fatal)") }
        if let interruption {
            await reportInterruption(interruption, read: readingsRead, acked: s.readingsAcked, unacked: unacked, timeout: timeout)
            return 128 + interruption.signal
        }
        if unacked > 0 {
            let fate = s.spooled
                ? "they are kept in the spool and resent first by the next sluice send with the same --spool"
                : "they may not have been written"
            await Console.shared.note(
                "sluice: \(Format.count(unacked)) readings were not acknowledged\(s.lastProblem.map { " (last problem: \($0))" } ?? ""); \(fate)")
            return 2
        }
        if fatal != nil { return 2 }
        if s.readingsRejected > 0 || s.batchesRejected > 0 || badLines > 0 || !n.inputFailures.isEmpty { return 1 }
        return 0
    }

    /// What an interrupted run leaves behind. Only what is true: unacknowledged batches live in the client's
    /// memory alone (the state file holds the producer id and next seq, nothing else), so they are gone.
    private func reportInterruption(_ i: Interruption, read: Int, acked: Int, unacked: Int, timeout: Duration?) async {
        let console = Console.shared
        await console.note(
            "sluice: interrupted by \(InterruptSignals.name(of: i.signal)): input not read to its end; \(Format.count(read)) readings read, \(Format.count(acked)) acknowledged")
        let stats = await client.statistics
        if stats.spooled {
            await console.note(
                "sluice: the spool keeps every reading taken: \(Format.count(stats.spoolReadings)) unacknowledged readings are resent first by the next sluice send with the same --spool, whose input must continue from line \(stats.spoolInputPosition + 1)")
            return
        }
        if unacked > 0 {
            let waited = timeout.map { " within \(Format.duration($0.seconds))" } ?? ""
            await console.note(
                "sluice: \(Format.count(unacked)) readings were not acknowledged\(waited): they were not delivered as far as sluice knows (the daemon may still commit batches it had already received), and nothing keeps them to be resent")
        }
        guard let path = i.stateFile else { return }
        let next = await client.nextSeq
        var text = "sluice: \(path) keeps this producer's id and next seq (\(next)): a re-run with --state-file \(path) continues after every seq used here, so no batch of this run is written twice"
        if unacked > 0 {
            text += "; the \(Format.count(unacked)) unacknowledged readings are not in it, so a re-run does not send them (input given again is written again: duplicates are recognised by producer and seq, not by content)"
        }
        await console.note(text)
    }
}
