import Foundation

/// The files a run writes (`--checkpoint-dir`, `--metrics`, `--trace`), checked before any
/// work: a path that cannot be written costs a second at the start instead of an epoch of
/// training, and a failure later names the file, the cause and the flag.
package enum OutputFiles {
    /// The checkpoints `train` keeps in its folder; a new run does not replace them silently.
    public static let checkpointNames = ["last.safetensors", "best.safetensors"]

    /// The checkpoints of `checkpointNames` that `folder` already holds (full paths).
    public static func existingCheckpoints(in folder: String) -> [String] {
        checkpointNames.map { URL(fileURLWithPath: folder).appendingPathComponent($0).path }
            .filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// Makes `path` a folder files can be created in: created with its parents when missing.
    public static func prepareFolder(_ path: String, flag: String) throws {
        if let reason = folderProblem(path) {
            throw problem(flag: flag, path: path, action: "write checkpoints there", reason: reason)
        }
    }

    /// Checks that lines can be appended to `path`, which is created at the first write when
    /// missing (its folder must exist).
    public static func checkAppendable(_ path: String, flag: String) throws {
        if let reason = fileProblem(path, flag: flag, replacedWhole: false) {
            throw problem(flag: flag, path: path, action: "write to it", reason: reason)
        }
    }

    /// Checks that `path` can be replaced whole (a temporary file beside it renamed over it),
    /// which is created when missing (its folder must exist).
    public static func checkReplaceable(_ path: String, flag: String) throws {
        if let reason = fileProblem(path, flag: flag, replacedWhole: true) {
            throw problem(flag: flag, path: path, action: "write to it", reason: reason)
        }
    }

    /// "--metrics /x/m.jsonl: cannot write to it: permission denied. Give --metrics a path
    /// you can write to": the flag, the path, what failed, the cause in plain words, the fix.
    public static func problem(
        flag: String, path: String, action: String, reason: String, fix: String? = nil
    ) -> SigPropError {
        .configuration(
            "\(flag) \(path): cannot \(action): \(reason). "
                + (fix ?? "Give \(flag) a path you can write to"))
    }

    /// Appends `data` to the file at `path`, creating it when missing.
    public static func append(_ data: Data, to path: String) throws(FileSystemError) {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw FileSystemError(path: path, code: errno) }
        defer { close(descriptor) }
        var failure: Int32?
        data.withUnsafeBytes { raw in
            var written = 0
            while written < raw.count, let base = raw.baseAddress {
                let count = write(descriptor, base + written, raw.count - written)
                if count < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                written += count
            }
        }
        if let failure { throw FileSystemError(path: path, code: failure) }
    }

    // MARK: Checks

    static let kernelInterface =
        "it is on /proc or /sys, a kernel interface that does not keep files"

    /// Why `path` cannot be a folder for new files, or nil when it can (it exists then).
    static func folderProblem(_ path: String) -> String? {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { return "it is a file, not a folder" }
        } else {
            guard errno == ENOENT || errno == ENOTDIR else { return FileSystemError.reason(errno) }
            let existing = FileSystemError.nearestExisting(path)
            if let reason = notAFolder(existing) { return reason }
            if FileSystemError.isKernelInterface(existing) { return kernelInterface }
            var missing: [String] = []
            var current = URL(fileURLWithPath: path).standardizedFileURL
            while current.path != existing, current.path != "/" {
                missing.append(current.path)
                current = current.deletingLastPathComponent()
            }
            for folder in missing.reversed() where mkdir(folder, 0o777) != 0 && errno != EEXIST {
                return "cannot create the folder \(folder): \(FileSystemError.reason(errno))"
            }
        }
        if FileSystemError.isKernelInterface(path) { return kernelInterface }
        return probeProblem(inFolder: path)
    }

    /// Why `path` cannot be written as a file, or nil when it can.
    static func fileProblem(_ path: String, flag: String, replacedWhole: Bool) -> String? {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var info = stat()
        if stat(path, &info) == 0 {
            if info.st_mode & S_IFMT == S_IFDIR { return "it is a folder, not a file" }
            if FileSystemError.isKernelInterface(path) { return kernelInterface }
            guard replacedWhole else {
                // Appending to a device (/dev/null) is fine; only opening tells.
                let descriptor = open(path, O_WRONLY | O_APPEND)
                guard descriptor >= 0 else { return FileSystemError.reason(errno) }
                close(descriptor)
                return nil
            }
            guard info.st_mode & S_IFMT == S_IFREG else {
                return "it is not a regular file (a device or a pipe), and \(flag) replaces "
                    + "its file whole"
            }
        } else if errno != ENOENT {
            return errno == ENOTDIR
                ? notAFolder(FileSystemError.nearestExisting(path)) ?? FileSystemError.reason(errno)
                : FileSystemError.reason(errno)
        }
        if stat(folder, &info) != 0 {
            return errno == ENOENT
                ? "the folder \(folder) does not exist" : FileSystemError.reason(errno)
        }
        if let reason = notAFolder(folder) { return reason }
        if FileSystemError.isKernelInterface(folder) { return kernelInterface }
        return probeProblem(inFolder: folder)
    }

    static func notAFolder(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFDIR else { return nil }
        return "\(path) is a file, not a folder"
    }

    /// Creates and deletes a file in `folder`: the only test that sees read-only mounts,
    /// permissions (root passes them all), quotas and full inode tables alike.
    static func probeProblem(inFolder folder: String) -> String? {
        let probe = URL(fileURLWithPath: folder).appendingPathComponent(
            ".sigprop-write-check-\(getpid())"
        ).path
        let descriptor = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else {
            return "cannot create files in \(folder): \(FileSystemError.reason(errno))"
        }
        close(descriptor)
        unlink(probe)
        return nil
    }
}
