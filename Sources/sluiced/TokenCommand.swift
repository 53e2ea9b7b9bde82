import ArgumentParser
import Foundation
import Logging
import SluiceCore
import SluiceStore

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke client tokens (stored hashed in the token file).",
        discussion: """
            A token lets a client connect from anywhere and write devices whose id starts with its prefix. \
            While no token exists, sluiced accepts loopback clients only. A running sluiced picks up changes \
            on SIGHUP (e.g. systemctl reload sluiced).
            """,
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it (once: only its SHA-256 is kept).",
            discussion: "Example: sluiced token create --prefix plant1. --name \"gateway 3\"")

        @OptionGroup var location: LocationOptions

        @Option(help: "Device ids this token may write start with this; empty = any device.")
        var prefix: String = ""

        @Option(help: "A note for operators, shown by `token list`.")
        var name: String = ""

        func run() throws {
            try TokenTable.validate(devicePrefix: prefix, name: name)
            let path = LocationOptions.tokenPath(try location.settings())
            var table = try TokenFile.load(path)
            var rng = SystemRandomNumberGenerator()
            let (token, entry) = TokenTable.makeToken(
                devicePrefix: prefix, name: name, createdAt: Int64(Date().timeIntervalSince1970), using: &rng)
            table.entries.append(entry)
            try TokenFile.save(table, to: path)
            print(token)
            FileHandle.standardError.write(
                Data("sluiced: token \(entry.id) created in \(path) (devices: \(prefix.isEmpty ? "any" : prefix + "*")); it is shown only this once\n".utf8))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens: id, device prefix, created, name.")

        @OptionGroup var location: LocationOptions

        func run() throws {
            let path = LocationOptions.tokenPath(try location.settings())
            let table = try TokenFile.load(path)
            if table.entries.isEmpty {
                print("no tokens in \(path): sluiced accepts loopback clients only")
                return
            }
            print("ID        PREFIX            CREATED               NAME")
            for e in table.entries {
                let created = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(e.createdAt)))
                let prefix = e.devicePrefix.isEmpty ? "*" : e.devicePrefix
                print("\(e.id.padding(toLength: 9, withPad: " ", startingAt: 0)) \(prefix.padding(toLength: 17, withPad: " ", startingAt: 0)) \(created)  \(e.name)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token by its id (from `token list`).",
            discussion: """
                The producer ids the token owns stay owned by it (no other token can take them over) unless \
                --release-producers is given, which frees them in the database (PostgreSQL must be running: \
                --database-url, or the embedded cluster of --state-dir while sluiced runs).
                Example: sluiced token revoke 3f9a0c1d --release-producers
                """)

        @OptionGroup var location: LocationOptions

        @Argument(help: "The token's id.")
        var id: String

        @Flag(help: "Also free the producer ids this token owns, so another token may claim them.")
        var releaseProducers = false

        @Option(help: "libpq URL of PostgreSQL, for --release-producers. Absent: the embedded cluster of --state-dir.")
        var databaseURL: String?

        func run() async throws {
            let settings = try location.settings(extra: ["database-url": databaseURL])
            let path = LocationOptions.tokenPath(settings)
            var table = try TokenFile.load(path)
            let before = table.entries.count
            table.entries.removeAll { $0.id == id }
            guard table.entries.count < before else {
                // Not a usage mistake: no usage text, exit status 1.
                throw SettingsError("no token with id \(id) in \(path): see `sluiced token list`")
            }
            var released: Int?
            if releaseProducers {
                // First, so a database that cannot be reached leaves the token as it was.
                let url = try Self.databaseURL(settings)
                do {
                    released = try await ProducerOwners(databaseURL: url).release(tokenID: id)
                } catch {
                    throw SettingsError("cannot free the producers of token \(id) in PostgreSQL (\(Settings.maskPassword(url))): \(error); the token was not revoked")
                }
            }
            try TokenFile.save(table, to: path)
            let freed = released.map { "; \($0) producer id\($0 == 1 ? "" : "s") freed" } ?? ""
            print("revoked \(id)\(freed); send SIGHUP to a running sluiced to apply it")
        }

        static func databaseURL(_ settings: Settings) throws -> String {
            if let url = settings["database-url"] { return url }
            let stateDir = settings["state-dir"] ?? "./sluice-state"
            guard FileManager.default.fileExists(atPath: stateDir + "/postgres.port"),
                FileManager.default.fileExists(atPath: stateDir + "/postgres/PG_VERSION")
            else {
                throw SettingsError("--release-producers needs the database: no --database-url and no embedded cluster in \(stateDir)")
            }
            // The embedded cluster takes no TCP: its private Unix socket, as sluiced itself reaches it.
            return try Serve.embeddedCluster(stateDir: stateDir, logger: Logger(label: "sluiced"), create: false).url
        }
    }
}
