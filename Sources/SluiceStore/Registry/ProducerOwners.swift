import Logging

/// Which token owns which producer (DESIGN §2, Ownership and fairness), kept in PostgreSQL's
/// `producer_owners` table so every daemon on the database agrees.
///
/// Runs on its own thread with its own libpq connection, like `DeviceRegistryReader`: the check happens at
/// every `Hello`, and a blocking libpq call must never hold an event loop or the cooperative pool.
public final class ProducerOwners: Sendable {
    private let databaseURL: String
    private let worker: StatefulWorker<PGConnection?>
    /// Owners already confirmed. An owner never changes while its token is valid (only `release` of a revoked
    /// token frees a producer, and a revoked token cannot authenticate), so a reconnect asks the database once.
    private let known = Locked<[ProducerID: String]>([:])

    public init(databaseURL: String) {
        self.databaseURL = databaseURL
        worker = StatefulWorker(name: "sluice-owners") { nil }
    }

    deinit { worker.stop() }

    /// Claims `producer` for `tokenID` if nobody owns it yet; returns the owner (the token id that first
    /// claimed it, possibly `tokenID` itself).
    public func claim(_ producer: ProducerID, tokenID: String) async throws -> String {
        if let owner = known.withLock({ $0[producer] }), owner == tokenID { return owner }
        let owner = try await claimInDatabase(producer, tokenID: tokenID)
        known.withLock { $0[producer] = owner }
        return owner
    }

    private func claimInDatabase(_ producer: ProducerID, tokenID: String) async throws -> String {
        let url = databaseURL
        let id = producer.description
        do {
            return try await worker.run { connection in
                // Two statements' worth of work in one: the insert wins, or the existing owner is read. A
                // concurrent claim by another daemon can leave both empty (its row was not yet visible to this
                // statement's snapshot), so try again once.
                for _ in 0..<3 {
                    let rows = try Self.withConnection(&connection, url: url) {
                        try $0.query(Self.claimSQL, parameters: [id, tokenID])
                    }
                    if let owner = rows.first?.first ?? nil { return owner }
                }
                throw PGError(sqlState: nil, message: "could not read the owner of producer \(id)", connectionBroken: false)
            }
        } catch let error as PGError {
            throw error.storeError
        }
    }

    /// Frees every producer `tokenID` owns (`sluiced token revoke --release-producers`); returns how many.
    public func release(tokenID: String) async throws -> Int {
        let url = databaseURL
        do {
            return try await worker.run { connection in
                let rows = try Self.withConnection(&connection, url: url) {
                    try $0.query(
                        "WITH gone AS (DELETE FROM producer_owners WHERE token_id = $1 RETURNING 1) SELECT count(*) FROM gone",
                        parameters: [tokenID])
                }
                return rows.first?.first.flatMap { $0.flatMap { Int($0) } } ?? 0
            }
        } catch let error as PGError {
            throw error.storeError
        }
    }

    static let claimSQL = """
        WITH claimed AS (
            INSERT INTO producer_owners (producer_id, token_id) VALUES ($1::uuid, $2)
            ON CONFLICT (producer_id) DO NOTHING RETURNING token_id)
        SELECT token_id FROM claimed
        UNION ALL
        SELECT token_id FROM producer_owners WHERE producer_id = $1::uuid
        LIMIT 1
        """

    private static func withConnection<T>(
        _ connection: inout PGConnection?, url: String, _ body: (PGConnection) throws -> T
    ) throws -> T {
        if connection?.isHealthy != true {
            connection = try open(url: url)
        }
        do {
            return try body(connection!)
        } catch let error as PGError where error.connectionBroken {
            connection = try open(url: url)
            return try body(connection!)
        }
    }

    /// Claims run one at a time at every Hello, so a storm of new producers would otherwise wait for one WAL
    /// flush each. Without waiting for the flush a crash can forget only the claims of its last moments, and
    /// their owners claim them again at their next Hello: nothing a claim protects is written before the
    /// producer's first batch commits, and that commit is durable.
    private static func open(url: String) throws -> PGConnection {
        let connection = try PGConnection(url: url, applicationName: "sluiced-owners")
        try connection.execute("SET synchronous_commit = off")
        return connection
    }
}
