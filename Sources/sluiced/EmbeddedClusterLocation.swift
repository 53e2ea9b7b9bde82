import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where the embedded PostgreSQL's data directory lives.
///
/// Normally `<state-dir>/postgres`. But root runs the cluster as `postgres` (PostgreSQL refuses root), and
/// `postgres` must be able to walk down to its data directory: a clone in `/root` or in a `mktemp -d`
/// directory (both mode 0700) is out of its reach, and the first command a newcomer types would fail. Then
/// the data directory goes to `/var/lib/sluice-embedded/<id>` (made for this state directory, owned by
/// `postgres`, mode 0700), and `<state-dir>/postgres` becomes a symbolic link to it, so every later start,
/// `sluiced psql` and a person looking find it the same way. (Not under `/var/lib/sluice`: the Debian package
/// gives that to the `sluice` user, mode 0750, which `postgres` may not enter.)
enum EmbeddedClusterLocation {
    /// Where relocated data directories go; overridable for tests with `SLUICE_EMBEDDED_ROOT`.
    static var relocationRoot: String {
        ProcessInfo.processInfo.environment["SLUICE_EMBEDDED_ROOT"] ?? "/var/lib/sluice-embedded"
    }

    struct Resolved {
        var dataDirectory: String
        /// Set when the data directory was moved out of the state directory (now or on an earlier start).
        var relocatedBecause: String?
    }

    /// The data directory for `stateDir`'s cluster, deciding (and linking) it on first use when `create`.
    static func resolve(stateDir: String, create: Bool) throws -> Resolved {
        let link = URL(fileURLWithPath: stateDir).standardizedFileURL.path + "/postgres"
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: link) {
            return Resolved(dataDirectory: target, relocatedBecause: "linked from \(link)")
        }
        if FileManager.default.fileExists(atPath: link) || !create || geteuid() != 0 {
            return Resolved(dataDirectory: link, relocatedBecause: nil)
        }
        guard let user = getpwnam("postgres")?.pointee, let blocked = firstBlockedAncestor(of: link, uid: user.pw_uid, gid: user.pw_gid)
        else { return Resolved(dataDirectory: link, relocatedBecause: nil) }

        let root = relocationRoot
        try createTraversable(root)
        let target = root + "/" + UUID().uuidString.lowercased()
        do {
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        } catch {
            throw SettingsError("cannot link \(link) to the embedded PostgreSQL's data directory \(target): \(error)")
        }
        let reason = "user postgres, who runs the embedded PostgreSQL, cannot enter \(blocked.path) "
            + "(mode \(String(blocked.mode, radix: 8))), so its data directory is \(target), linked from \(link)"
        return Resolved(dataDirectory: target, relocatedBecause: reason)
    }

    /// The first directory on the way to `path` (its parent included, `path` itself not) that `uid`/`gid` may
    /// not pass through, or nil if every one lets them. The state directory itself is made passable for the
    /// cluster's group when sluiced creates it; supplementary groups are not consulted (erring towards
    /// relocating, which always works).
    static func firstBlockedAncestor(of path: String, uid: uid_t, gid: gid_t) -> (path: String, mode: mode_t)? {
        var ancestors: [String] = []
        var current = (path as NSString).deletingLastPathComponent
        while true {
            ancestors.append(current)
            if current == "/" || current.isEmpty { break }
            current = (current as NSString).deletingLastPathComponent
        }
        for dir in ancestors.reversed() {
            var st = stat()
            guard stat(dir, &st) == 0 else { continue }  // not there yet: created by us, passable
            let mode = st.st_mode & 0o7777
            let passable = st.st_uid == uid ? mode & 0o100 != 0 : st.st_gid == gid ? mode & 0o010 != 0 : mode & 0o001 != 0
            if !passable { return (dir, mode) }
        }
        return nil
    }

    private static func createTraversable(_ dir: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        } catch {
            throw SettingsError("cannot create \(dir) for the embedded PostgreSQL's data: \(error)")
        }
    }
}
