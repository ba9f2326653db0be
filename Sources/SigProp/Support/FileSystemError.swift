import Foundation

/// A failed file-system call: the path it was about and the system's error number. Callers
/// word the message (which flag names the path, what to do); `reason` gives the cause in plain
/// words instead of a Foundation error code.
public struct FileSystemError: Error, Equatable {
    public var path: String
    public var code: Int32

    public init(path: String, code: Int32) {
        self.path = path
        self.code = code
    }

    public var reason: String { Self.reason(code) }

    /// The words users need for the errors they meet; the C library's text for the rest.
    public static func reason(_ code: Int32) -> String {
        switch code {
        case ENOENT: "no such file or folder"
        case EACCES, EPERM: "permission denied"
        case EROFS: "the file system is read-only"
        case ENOTDIR: "a part of the path is a file, not a folder"
        case EISDIR: "it is a folder, not a file"
        case ENOSPC: "no space left on the device (the disk is full)"
        case EDQUOT: "the disk quota is exceeded"
        case EFBIG: "the file is too large for the file system"
        case ENAMETOOLONG: "the name is too long"
        case ELOOP: "too many symbolic links (a link that points to itself?)"
        case EIO: "input/output error (a failing disk, or a file that takes no data)"
        default: String(cString: strerror(code))
        }
    }

    /// The error number behind a Foundation error (which wraps it in NSCocoaErrorDomain codes
    /// such as 512 or 640), or nil when there is none.
    public static func code(of error: Error) -> Int32? {
        let error = error as NSError
        if error.domain == NSPOSIXErrorDomain { return Int32(error.code) }
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? Error {
            return code(of: underlying)
        }
        switch CocoaError.Code(rawValue: error.code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return ENOENT
        case .fileReadNoPermission, .fileWriteNoPermission: return EACCES
        case .fileWriteOutOfSpace: return ENOSPC
        case .fileWriteVolumeReadOnly: return EROFS
        default: return nil
        }
    }

    /// Whether `path` lies on a kernel interface (/proc, /sys) rather than storage: files there
    /// look writable but do not keep what is written.
    public static func isKernelInterface(_ path: String) -> Bool {
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL
        return ["/proc", "/sys"].contains {
            resolved.path == $0 || resolved.path.hasPrefix($0 + "/")
        }
    }

    /// The nearest existing folder at or above `path` (for "can a file be made here?").
    static func nearestExisting(_ path: String) -> String {
        var current = URL(fileURLWithPath: path).standardizedFileURL.path
        while current != "/" {
            var info = stat()
            if stat(current, &info) == 0 { return current }
            current = URL(fileURLWithPath: current).deletingLastPathComponent().path
        }
        return "/"
    }

    /// The whole contents of the file at `path`, read with the system's calls so a failure
    /// keeps its cause (a folder, no permission) instead of a generic Foundation error.
    public static func read(_ path: String) throws(FileSystemError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw FileSystemError(path: path, code: errno) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw FileSystemError(path: path, code: errno) }
        guard info.st_mode & S_IFMT != S_IFDIR else {
            throw FileSystemError(path: path, code: EISDIR)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(max(0, Int(info.st_size)))
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes {
                Foundation.read(descriptor, $0.baseAddress, $0.count)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileSystemError(path: path, code: errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }
}
