import Foundation

/// Whole-file replacement that a crash cannot tear: checkpoints and the kernel tuning cache.
enum AtomicFile {
    /// Which step failed, with the system's reason; callers word the message for their file.
    enum Failure: Error {
        case folder(path: String, reason: String)
        case temporary(path: String, reason: String)
        case write(reason: String)
    }

    /// Writes `data` to `url`: a temporary file in the same folder (created if missing), fsync,
    /// rename over `url`, fsync of the folder. A crash at any moment leaves either the old file
    /// or the new one; a failure leaves the old one.
    static func write(_ data: Data, to url: URL) throws(Failure) {
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true)
        } catch {
            throw .folder(
                path: directory.path,
                reason: FileSystemError.code(of: error).map(FileSystemError.reason)
                    ?? error.localizedDescription)
        }
        removeStaleTemporaries(of: url)
        let temporary = directory.appendingPathComponent(
            ".\(url.lastPathComponent).tmp-\(getpid())")
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw .temporary(path: temporary.path, reason: FileSystemError.reason(errno))
        }
        var failure: String?
        data.withUnsafeBytes { raw in
            var written = 0
            while written < raw.count {
                let n = Foundation.write(
                    descriptor, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = FileSystemError.reason(errno)
                    return
                }
                written += n
            }
        }
        if failure == nil, fsync(descriptor) != 0 { failure = FileSystemError.reason(errno) }
        close(descriptor)
        if failure == nil, rename(temporary.path, url.path) != 0 {
            failure = FileSystemError.reason(errno)
        }
        if let failure {
            unlink(temporary.path)
            throw .write(reason: failure)
        }
        let folder = open(directory.path, O_RDONLY)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }

    /// Deletes temporary files of `url` left by writers that were killed mid-write (their
    /// process no longer exists); a live writer's file is left alone.
    static func removeStaleTemporaries(of url: URL) {
        let directory = url.deletingLastPathComponent()
        let prefix = ".\(url.lastPathComponent).tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path)
        else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = pid_t(name.dropFirst(prefix.count)) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) {
                unlink(directory.appendingPathComponent(name).path)
            }
        }
    }
}
