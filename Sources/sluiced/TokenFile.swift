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

    /// Writes atomically and durably: the whole text to a new temporary file created with mode 0600 (never
    /// readable by others, not even for a moment), fsynced, renamed over `path`, and the directory fsynced.
    /// A directory it has to create is made 0700.
    static func save(_ table: TokenTable, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        func failure(_ what: String) -> SettingsError {
            SettingsError("cannot \(what): \(String(cString: strerror(errno)))")
        }
        let temporary = path + ".tmp.\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("create \(temporary)") }
        var closed = false
        defer { if !closed { close(fd) } }
        let bytes = Array(table.serialized().utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                unlink(temporary)
                throw failure("write \(temporary)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            unlink(temporary)
            throw failure("fsync \(temporary)")
        }
        closed = true
        guard close(fd) == 0 else {
            unlink(temporary)
            throw failure("close \(temporary)")
        }
        if rename(temporary, path) != 0 {
            let error = failure("move \(temporary) to \(path)")
            unlink(temporary)
            throw error
        }
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
    }
}
