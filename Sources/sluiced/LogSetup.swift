import Foundation
import Logging
import NIOConcurrencyHelpers

/// How `sluiced` writes its log: one line per event on standard error, as text or JSON, at a level that
/// SIGHUP can change while the daemon runs.
enum LogFormat: String, CaseIterable {
    /// swift-log's usual `timestamp level label: metadata message` line.
    case text
    /// One JSON object per line (`ts`, `level`, `label`, `msg` and the metadata), for journald or Loki.
    case json
}

/// The level every handler consults on each call, so a reload takes effect at once everywhere.
final class SharedLogLevel: Sendable {
    private let box: NIOLockedValueBox<Logger.Level>
    init(_ level: Logger.Level) { box = NIOLockedValueBox(level) }
    var level: Logger.Level {
        get { box.withLockedValue { $0 } }
        set { box.withLockedValue { $0 = newValue } }
    }
}

/// Wraps a handler so its level is the shared one.
struct ReloadableLevelLogHandler: LogHandler {
    var inner: any LogHandler
    let shared: SharedLogLevel

    var logLevel: Logger.Level {
        get { shared.level }
        set { shared.level = newValue }
    }
    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }
    func log(event: LogEvent) {
        inner.log(event: event)
    }
}

/// One JSON object per event on standard error.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: String] = [:]
        for (key, value) in metadata { fields[key] = "\(value)" }
        for (key, value) in event.metadata ?? [:] { fields[key] = "\(value)" }
        fields["ts"] = Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
        fields["level"] = event.level.rawValue
        fields["label"] = label
        fields["msg"] = "\(event.message)"
        fields["source"] = event.source
        let body = fields.sorted { $0.key < $1.key }.map { "\(Self.quote($0.key)):\(Self.quote($0.value))" }
        FileHandle.standardError.write(Data(("{" + body.joined(separator: ",") + "}\n").utf8))
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let s where s.value < 0x20: out += String(format: "\\u%04x", s.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

enum LogSetup {
    /// Bootstraps swift-log once for the process; returns the level SIGHUP can change.
    static func bootstrap(format: LogFormat, level: Logger.Level) -> SharedLogLevel {
        let shared = SharedLogLevel(level)
        LoggingSystem.bootstrap { label in
            let inner: any LogHandler =
                switch format {
                case .text: StreamLogHandler.standardError(label: label)
                case .json: JSONLogHandler(label: label)
                }
            return ReloadableLevelLogHandler(inner: inner, shared: shared)
        }
        return shared
    }
}
