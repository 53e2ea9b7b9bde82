import Logging

/// What the device registry says about one device: where it is and how to calibrate its raw values.
public struct DeviceInfo: Sendable, Equatable {
    public var site: String?
    /// Calibrated value = raw × scale + offset.
    public var scale: Double
    public var offset: Double
    public var unit: String?

    public init(site: String? = nil, scale: Double = 1, offset: Double = 0, unit: String? = nil) {
        self.site = site
        self.scale = scale
        self.offset = offset
        self.unit = unit
    }
}

/// Reads the `devices` table for enrichment, on its own thread with its own libpq connection, so a slow
/// registry never holds up a writer, an event loop or the cooperative pool. Reconnects once per call when
/// the connection turns out to be broken.
public final class DeviceRegistryReader: Sendable {
    private let databaseURL: String
    private let logger: Logger
    private let worker: StatefulWorker<PGConnection?>

    public init(databaseURL: String, logger: Logger) {
        self.databaseURL = databaseURL
        self.logger = logger
        worker = StatefulWorker(name: "sluice-registry") { nil }
    }

    deinit { worker.stop() }

    /// Every registered device.
    public func loadAll() async throws -> [String: DeviceInfo] {
        try await read(sql: Self.selectAll, parameters: [])
    }

    /// The registered devices among `deviceIDs` (absent ones are simply missing from the result).
    public func lookup(_ deviceIDs: [String]) async throws -> [String: DeviceInfo] {
        // NUL cannot occur in a PostgreSQL text value, so such an id is not registered (and cannot be sent).
        let ids = deviceIDs.filter { !$0.utf8.contains(0) }
        guard !ids.isEmpty else { return [:] }
        return try await read(sql: Self.selectAll + " WHERE device_id = ANY($1::text[])", parameters: [Self.arrayLiteral(ids)])
    }

    private static let selectAll = #"SELECT device_id, site, scale, "offset", unit FROM devices"#

    private func read(sql: String, parameters: [String?]) async throws -> [String: DeviceInfo] {
        let url = databaseURL
        do {
            return try await worker.run { connection in
                let rows = try Self.withConnection(&connection, url: url) { try $0.query(sql, parameters: parameters) }
                var devices: [String: DeviceInfo] = [:]
                devices.reserveCapacity(rows.count)
                for row in rows {
                    guard let id = row[0] else { continue }
                    devices[id] = DeviceInfo(
                        site: row[1], scale: row[2].flatMap(Double.init) ?? 1, offset: row[3].flatMap(Double.init) ?? 0,
                        unit: row[4])
                }
                return devices
            }
        } catch let error as PGError {
            throw error.storeError
        }
    }

    private static func withConnection<T>(
        _ connection: inout PGConnection?, url: String, _ body: (PGConnection) throws -> T
    ) throws -> T {
        if connection?.isHealthy != true {
            connection = try PGConnection(url: url, applicationName: "sluiced-registry")
        }
        do {
            return try body(connection!)
        } catch let error as PGError where error.connectionBroken {
            connection = try PGConnection(url: url, applicationName: "sluiced-registry")
            return try body(connection!)
        }
    }

    /// A PostgreSQL array literal of text elements, each quoted, with `"` and `\` escaped.
    static func arrayLiteral(_ values: [String]) -> String {
        "{" + values.map { value in
            var escaped = "\""
            for character in value.unicodeScalars {
                if character == "\"" || character == "\\" { escaped.unicodeScalars.append("\\") }
                escaped.unicodeScalars.append(character)
            }
            return escaped + "\""
        }.joined(separator: ",") + "}"
    }
}
