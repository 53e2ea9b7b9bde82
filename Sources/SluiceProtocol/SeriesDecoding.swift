/// A series expanded into absolute times and values, ready for validation and writing.
public struct ExpandedSeries: Sendable, Equatable {
    public var deviceID: String
    public var metric: String
    /// Unix microseconds.
    public var times: [Int64]
    public var values: [Double]
    /// Empty means every reading is good (0).
    public var quality: [UInt32]

    public init(deviceID: String, metric: String, times: [Int64], values: [Double], quality: [UInt32]) {
        self.deviceID = deviceID
        self.metric = metric
        self.times = times
        self.values = values
        self.quality = quality
    }

    public var count: Int { times.count }
}

extension Series {
    /// The number of readings this series claims to hold (the length of its time column).
    public var readingCount: Int { timeDeltasUs.count }

    /// Expands the columns, checking that they are consistent. A series that fails here is structurally
    /// broken, so its whole batch is rejected with `INVALID_ARGUMENT`.
    ///
    /// - Parameter index: the series' position in its batch, for the error message.
    public func expand(index: Int = 0) throws(WireError) -> ExpandedSeries {
        let n = timeDeltasUs.count
        func invalid(_ why: String) -> WireError {
            WireError(.invalidArgument, "series \(index) (device \"\(deviceID)\", metric \"\(metric)\"): \(why)")
        }
        var times = [Int64]()
        times.reserveCapacity(n)
        var t = baseTimeUs
        for delta in timeDeltasUs {
            let (next, overflow) = t.addingReportingOverflow(delta)
            if overflow { throw invalid("time deltas overflow a 64-bit microsecond timestamp") }
            t = next
            times.append(t)
        }
        var decoded = [Double]()
        if !values.isEmpty || scaledDeltas.isEmpty && decimalExponent == 0 {
            if !scaledDeltas.isEmpty {
                throw invalid("both value columns are set (values and scaled_deltas); use exactly one")
            }
            if values.count != n {
                throw invalid("\(n) timestamps but \(values.count) values; columns must have equal length")
            }
            decoded = values
        } else {
            if scaledDeltas.count != n {
                throw invalid("\(n) timestamps but \(scaledDeltas.count) scaled values; columns must have equal length")
            }
            let exponent = Int(decimalExponent)
            guard DecimalScaling.exponentRange.contains(exponent) else {
                throw invalid("decimal_exponent \(exponent) is outside \(DecimalScaling.exponentRange)")
            }
            decoded.reserveCapacity(n)
            var k: Int64 = 0
            for delta in scaledDeltas {
                let (next, overflow) = k.addingReportingOverflow(delta)
                if overflow { throw invalid("scaled value deltas overflow a 64-bit integer") }
                k = next
                decoded.append(DecimalScaling.value(scaled: k, exponent: exponent))
            }
        }
        if !quality.isEmpty && quality.count != n {
            throw invalid("\(n) timestamps but \(quality.count) quality codes; send none or one per reading")
        }
        return ExpandedSeries(deviceID: deviceID, metric: metric, times: times, values: decoded, quality: quality)
    }
}
