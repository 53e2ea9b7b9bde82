import SluiceProtocol

/// One sensor reading.
public struct Reading: Sendable, Equatable {
    public var deviceID: String
    public var metric: String
    /// Unix time in microseconds.
    public var timeMicros: Int64
    public var value: Double
    /// 0 means good.
    public var quality: UInt32

    public init(deviceID: String, metric: String, timeMicros: Int64, value: Double, quality: UInt32 = 0) {
        self.deviceID = deviceID
        self.metric = metric
        self.timeMicros = timeMicros
        self.value = value
        self.quality = quality
    }
}

/// Readings of one device and metric, by column: the unit the client queues and cuts batches from.
public struct SeriesChunk: Sendable, Equatable {
    public var deviceID: String
    public var metric: String
    public var times: [Int64]
    public var values: [Double]
    /// Empty means every reading is good (0); otherwise one code per reading.
    public var quality: [UInt32]

    public init(deviceID: String, metric: String, times: [Int64] = [], values: [Double] = [], quality: [UInt32] = []) {
        precondition(times.count == values.count, "a series chunk needs one value per timestamp")
        precondition(quality.isEmpty || quality.count == times.count, "quality codes: none or one per reading")
        self.deviceID = deviceID
        self.metric = metric
        self.times = times
        self.values = values
        self.quality = quality
    }

    public init(_ builder: SeriesBuilder) {
        self.init(deviceID: builder.deviceID, metric: builder.metric, times: builder.times, values: builder.values,
            quality: builder.quality)
    }

    public var count: Int { times.count }

    /// Readings `range` of this chunk.
    func slice(_ range: Range<Int>) -> SeriesChunk {
        SeriesChunk(
            deviceID: deviceID, metric: metric, times: Array(times[range]), values: Array(values[range]),
            quality: quality.isEmpty ? [] : Array(quality[range]))
    }

    /// Rough memory cost, for the client's byte budget.
    var estimatedBytes: Int { 64 + deviceID.utf8.count + metric.utf8.count + times.count * 16 + quality.count * 4 }

    /// Groups readings by device and metric, keeping their order within each group and the groups in order of
    /// first appearance.
    public static func group(_ readings: [Reading]) -> [SeriesChunk] {
        var index: [String: Int] = [:]
        var chunks: [SeriesChunk] = []
        for r in readings {
            let key = r.deviceID + "\u{0}" + r.metric
            let i: Int
            if let existing = index[key] {
                i = existing
            } else {
                i = chunks.count
                index[key] = i
                chunks.append(SeriesChunk(deviceID: r.deviceID, metric: r.metric))
            }
            chunks[i].times.append(r.timeMicros)
            chunks[i].values.append(r.value)
            if r.quality != 0 && chunks[i].quality.isEmpty {
                chunks[i].quality = Array(repeating: 0, count: chunks[i].times.count - 1)
            }
            if !chunks[i].quality.isEmpty { chunks[i].quality.append(r.quality) }
        }
        return chunks
    }
}
