import Foundation
import SluiceCore

/// Reads and writes the token file (format: `TokenTable`). A missing file is an empty table.
enum TokenFile {
    static func load(_ path: String) throws -> TokenTable {
        guard FileManager.default.fileExists(atPath: path) else { return TokenTable() }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SettingsError("cannot read token file \(path): \(error.localizedDescription)")
        }
        do {
            return try TokenTable(parsing: text)
        } catch {
            throw SettingsError("\(path): \(error)")
        }
    }

    /// Writes atomically (temporary file + rename) with mode 0600.
    static func save(_ table: TokenTable, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(
            atPath: temporary, contents: Data(table.serialized().utf8), attributes: [.posixPermissions: 0o600])
        else { throw SettingsError("cannot write \(temporary)") }
        if rename(temporary, path) != 0 {
            throw SettingsError("cannot move \(temporary) to \(path): \(String(cString: strerror(errno)))")
        }
    }
}
