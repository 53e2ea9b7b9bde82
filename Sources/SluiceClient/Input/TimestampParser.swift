/// Timestamps as people and loggers write them, to Unix microseconds.
///
/// - RFC 3339: `2024-05-01T12:00:00Z`, `2024-05-01 12:00:00.123456+02:00` (fraction up to µs; `T`, `t` or a
///   space between date and time; an offset or `Z` is required: a time without one is ambiguous).
/// - Unix time as a number, its unit told by magnitude: below 10^11 seconds (fractions allowed), below 10^14
///   milliseconds, below 10^17 microseconds, else nanoseconds. (10^11 s is the year 5138; 10^14 ms and
///   10^17 µs are 1973 in the next unit, earlier than any sensor data this accepts.)
public enum TimestampParser {
    /// Unix microseconds, or a message saying what is wrong with `text`.
    public static func parse(_ text: Substring) -> Result<Int64, TimestampError> {
        let t = text.utf8
        guard let first = t.first else { return .failure(TimestampError("timestamp is empty")) }
        if first == UInt8(ascii: "-") || first == UInt8(ascii: "+") || first == UInt8(ascii: ".") || isDigit(first) {
            // "2024-05-01…" also starts with a digit; a date has '-' after 4 digits.
            let bytes = Array(t)
            if bytes.count >= 10 && bytes[4] == UInt8(ascii: "-") { return parseRFC3339(bytes, text) }
            return parseUnix(bytes, text)
        }
        return .failure(TimestampError(describe(text)))
    }

    public static func parse(_ text: String) -> Result<Int64, TimestampError> { parse(Substring(text)) }

    static func describe(_ text: Substring) -> String {
        "timestamp \"\(text.prefix(40))\" is neither RFC 3339 (2024-05-01T12:00:00Z) nor Unix seconds, ms, µs or ns"
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }

    private static func parseUnix(_ b: [UInt8], _ text: Substring) -> Result<Int64, TimestampError> {
        var i = 0
        var negative = false
        if b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") {
            negative = b[i] == UInt8(ascii: "-")
            i += 1
        }
        var integer: Int64 = 0
        var integerDigits = 0
        while i < b.count, isDigit(b[i]) {
            let (m, o1) = integer.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(b[i] - 48))
            if o1 || o2 { return .failure(TimestampError("timestamp \"\(text.prefix(40))\" is too large")) }
            integer = a
            integerDigits += 1
            i += 1
        }
        var fraction: [UInt8] = []
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            while i < b.count, isDigit(b[i]) {
                fraction.append(b[i] - 48)
                i += 1
            }
        }
        // Exponent notation (1.7e9) as JSON encoders sometimes write it.
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            guard let d = Double(String(text)), d.isFinite, abs(d) < 9.2e18 else {
                return .failure(TimestampError(describe(text)))
            }
            return parseUnix(Array(String(Int64(d.rounded())).utf8), text)
        }
        guard i == b.count, integerDigits + fraction.count > 0 else { return .failure(TimestampError(describe(text))) }
        func frac(_ digits: Int) -> Int64 {
            var v: Int64 = 0
            for k in 0..<digits { v = v * 10 + Int64(k < fraction.count ? fraction[k] : 0) }
            return v
        }
        let micros: Int64
        switch integer {
        case ..<100_000_000_000: micros = integer * 1_000_000 + frac(6)
        case ..<100_000_000_000_000: micros = integer * 1_000 + frac(3)
        case ..<100_000_000_000_000_000: micros = integer
        default: micros = integer / 1_000
        }
        return .success(negative ? -micros : micros)
    }

    private static func parseRFC3339(_ b: [UInt8], _ text: Substring) -> Result<Int64, TimestampError> {
        var i = 0
        func number(_ digits: Int) -> Int? {
            guard i + digits <= b.count else { return nil }
            var v = 0
            for k in i..<i + digits {
                guard isDigit(b[k]) else { return nil }
                v = v * 10 + Int(b[k] - 48)
            }
            i += digits
            return v
        }
        func expect(_ chars: String) -> Bool {
            guard i < b.count, chars.utf8.contains(b[i]) else { return false }
            i += 1
            return true
        }
        let bad = TimestampError(describe(text))
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2) else {
            return .failure(bad)
        }
        guard expect("Tt ") else {
            return .failure(TimestampError("timestamp \"\(text.prefix(40))\" has a date but no time: write e.g. \(text.prefix(10))T00:00:00Z"))
        }
        guard let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2) else {
            return .failure(bad)
        }
        var micros = 0
        if i < b.count, b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: ",") {
            i += 1
            var digits = 0
            while i < b.count, isDigit(b[i]) {
                if digits < 6 { micros = micros * 10 + Int(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return .failure(bad) }
            for _ in digits..<max(digits, 6) { micros *= 10 }
        }
        var offsetSeconds = 0
        if i < b.count, b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let oh = number(2), expect(":"), let om = number(2), oh <= 23, om <= 59 else { return .failure(bad) }
            offsetSeconds = sign * (oh * 3600 + om * 60)
        } else if i == b.count {
            return .failure(
                TimestampError("timestamp \"\(text.prefix(40))\" has no time zone: add Z for UTC or an offset like +02:00"))
        }
        guard i == b.count else { return .failure(bad) }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour <= 23, minute <= 59,
            second <= 60
        else {
            return .failure(TimestampError("timestamp \"\(text.prefix(40))\" is not a real date and time"))
        }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
        return .success(seconds * 1_000_000 + Int64(micros))
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

/// Why a timestamp could not be read.
public struct TimestampError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
