import Foundation

/// Reads readings from lines of text, one reading per line:
///
/// - CSV: `device,metric,timestamp,value[,quality]`; a header line (first field `device` or `device_id`),
///   blank lines and lines starting with `#` are skipped; fields may be quoted.
/// - JSON lines: `{"device": "pump-1", "metric": "temp_c", "timestamp": "2024-05-01T12:00:00Z", "value": 21.37,
///   "quality": 0}` (also `device_id`; `time` or `ts`; `quality` optional).
///
/// Timestamps go through `TimestampParser`. A line that cannot be read yields a message naming the problem;
/// the caller reports it with the line number and goes on.
public struct ReadingLineParser: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case csv
        case jsonLines = "jsonl"
    }

    public enum Line: Equatable, Sendable {
        case reading(Reading)
        /// Blank, comment or header line.
        case skipped
        case bad(String)
    }

    /// nil until the first data line decides it (a line starting with `{` means JSON lines).
    public private(set) var format: Format?
    private var sawData = false

    public init(format: Format? = nil) { self.format = format }

    public mutating func parse(_ line: Substring) -> Line {
        var text = line
        while let last = text.last, last == "\r" || last == " " || last == "\t" { text = text.dropLast() }
        while let first = text.first, first == " " || first == "\t" || first == "\u{FEFF}" { text = text.dropFirst() }
        if text.isEmpty || text.first == "#" { return .skipped }
        if format == nil { format = text.first == "{" ? .jsonLines : .csv }
        defer { sawData = true }
        switch format! {
        case .csv: return parseCSV(text)
        case .jsonLines: return parseJSON(text)
        }
    }

    public mutating func parse(_ line: String) -> Line { parse(Substring(line)) }

    private func parseCSV(_ text: Substring) -> Line {
        var fields = text.split(separator: ",", omittingEmptySubsequences: false).map { unquote($0) }
        if !sawData, let f = fields.first?.lowercased(), f == "device" || f == "device_id" { return .skipped }
        guard fields.count == 4 || fields.count == 5 else {
            return .bad("expected 4 or 5 comma-separated fields (device,metric,timestamp,value[,quality]), got \(fields.count)")
        }
        if fields.count == 4 { fields.append("") }
        return reading(device: fields[0], metric: fields[1], timestamp: .text(fields[2]), value: .text(fields[3]),
            quality: fields[4].isEmpty ? nil : .text(fields[4]))
    }

    private func unquote(_ field: Substring) -> Substring {
        var f = field
        while let c = f.first, c == " " { f = f.dropFirst() }
        while let c = f.last, c == " " { f = f.dropLast() }
        if f.count >= 2, f.first == "\"", f.last == "\"" { f = f.dropFirst().dropLast() }
        return f
    }

    private enum Field {
        case text(Substring)
        case number(NSNumber)
    }

    private func parseJSON(_ text: Substring) -> Line {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            return .bad("not a JSON object")
        }
        func field(_ keys: String...) -> Field? {
            for key in keys {
                if let s = object[key] as? String { return .text(Substring(s)) }
                if let n = object[key] as? NSNumber { return .number(n) }
            }
            return nil
        }
        guard case .text(let device)? = field("device", "device_id") else { return .bad("\"device\" is missing or not a string") }
        guard case .text(let metric)? = field("metric") else { return .bad("\"metric\" is missing or not a string") }
        guard let timestamp = field("timestamp", "time", "ts") else { return .bad("\"timestamp\" is missing") }
        guard let value = field("value") else { return .bad("\"value\" is missing or not a number") }
        return reading(device: device, metric: metric, timestamp: timestamp, value: value, quality: field("quality"))
    }

    private func reading(device: Substring, metric: Substring, timestamp: Field, value: Field, quality: Field?) -> Line {
        guard !device.isEmpty else { return .bad("device is empty") }
        guard !metric.isEmpty else { return .bad("metric is empty") }
        let timeText: Substring
        switch timestamp {
        case .text(let t): timeText = t
        case .number(let n): timeText = Substring(n.stringValue)
        }
        let micros: Int64
        switch TimestampParser.parse(timeText) {
        case .success(let m): micros = m
        case .failure(let e): return .bad(e.description)
        }
        let v: Double
        switch value {
        case .text(let t):
            guard let d = Double(t) else { return .bad("value \"\(t.prefix(40))\" is not a number") }
            v = d
        case .number(let n): v = n.doubleValue
        }
        var q: UInt32 = 0
        switch quality {
        case nil: break
        case .text(let t)?:
            guard let parsed = UInt32(t) else { return .bad("quality \"\(t.prefix(40))\" is not an integer 0–4294967295") }
            q = parsed
        case .number(let n)?:
            guard let parsed = UInt32(exactly: n.doubleValue) else {
                return .bad("quality \(n) is not an integer 0–4294967295")
            }
            q = parsed
        }
        return .reading(Reading(deviceID: String(device), metric: String(metric), timeMicros: micros, value: v, quality: q))
    }
}
