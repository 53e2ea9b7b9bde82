import Foundation

/// Reads a PEM file that a TLS set-up names (a certificate chain, a key, a CA bundle), with the reason a
/// person can act on when it cannot be read. Both ends of the connection use it; each wraps the reason in its
/// own error type. Blocking file I/O.
public enum PEMFile {
    /// The file's bytes, or the reason they could not be read: "<what> <path> does not exist", "... is a
    /// directory, not a PEM file", "... cannot be read (check its permissions)".
    public static func read(_ path: String, what: String) -> Result<[UInt8], PEMFileError> {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return .failure(PEMFileError("\(what) \(path) does not exist"))
        }
        guard !isDirectory.boolValue else { return .failure(PEMFileError("\(what) \(path) is a directory, not a PEM file")) }
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(PEMFileError("\(what) \(path) cannot be read (check its permissions)"))
        }
        return .success(Array(data))
    }
}

/// Why a PEM file could not be read; `description` names the file.
public struct PEMFileError: Error, Sendable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
