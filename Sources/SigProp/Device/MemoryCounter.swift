import Foundation

/// Bytes of tensor storage alive on one device: every allocation adds, every release
/// subtracts. What `Device.bytesInUse` reports (the leak check of long runs reads it).
final class MemoryCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes = 0

    func add(_ delta: Int) { lock.withLock { bytes += delta } }
    var value: Int { lock.withLock { bytes } }
}
