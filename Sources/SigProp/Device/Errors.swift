import Foundation

/// Errors of the package's own checks. Each message names the thing at fault and the fix.
public enum SigPropError: Error, Equatable, CustomStringConvertible {
    /// A bad environment variable, flag or setting.
    case configuration(String)
    /// Operands whose shapes do not fit the operation.
    case shapeMismatch(operation: String, detail: String)
    /// A tensor used with a device it does not live on.
    case deviceMismatch(operation: String, tensorDevice: String, device: String)
    /// A reference-vector (golden) file that cannot be used.
    case badGoldenFile(path: String, reason: String)
    /// A data set file or folder that is missing or malformed.
    case dataset(path: String, problem: String, fix: String)
    /// An allocation larger than the device allows or has free.
    case outOfMemory(device: String, requestedBytes: Int, limitBytes: UInt64, detail: String)
    /// A model or training set-up that needs more memory than a device has, found before
    /// anything is allocated: what needs how much where, the device's limit, the fix.
    case doesNotFit(what: String, limit: String, fix: String)

    public var description: String {
        switch self {
        case .configuration(let message):
            return message
        case .shapeMismatch(let operation, let detail):
            return "\(operation): shapes do not fit: \(detail)"
        case .deviceMismatch(let operation, let tensorDevice, let device):
            return
                "\(operation): a tensor on \(tensorDevice) was passed to \(device); move it with "
                + "Device.transfer(_:) or create it on \(device)"
        case .badGoldenFile(let path, let reason):
            return "golden file \(path): \(reason)"
        case .dataset(let path, let problem, let fix):
            return "data set \(path): \(problem). \(fix.prefix(1).uppercased() + fix.dropFirst())"
        case .doesNotFit(let what, let limit, let fix):
            return "\(what), \(limit). \(fix)"
        case .outOfMemory(let device, let requested, let limit, let detail):
            return "out of memory on \(device): asked for \(formatBytes(UInt64(requested))), "
                + "the device allows \(formatBytes(limit)) (\(detail)). Use a smaller "
                + "--batch-size or model, or another device (SIGPROP_BACKEND, SIGPROP_DEVICE)"
        }
    }
}

/// "1.5 GiB", "64.0 KiB", "12 B".
public func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}
