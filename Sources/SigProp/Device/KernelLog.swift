import Foundation

/// The operations a queue ran, with their times, for traces: each OpenCL kernel with a way to
/// read its profiling times once it completed, each CPU operation with the host clock around
/// it. Attached to a queue only while tracing.
final class KernelLog: @unchecked Sendable {
    struct Entry {
        let name: String
        let start: UInt64
        let end: UInt64
    }

    private let lock = NSLock()
    private var timed: [Entry] = []
    private var pending: [(name: String, times: () throws -> (start: UInt64, end: UInt64)?)] = []

    /// An operation whose times `times` reads later: it waits for the operation to finish
    /// (throwing if it failed) and gives nil where the driver has no timestamps for it.
    func add(_ name: String, times: @escaping () throws -> (start: UInt64, end: UInt64)?) {
        lock.withLock { pending.append((name, times)) }
    }
    func add(_ name: String, start: UInt64, end: UInt64) {
        lock.withLock { timed.append(Entry(name: name, start: start, end: end)) }
    }

    /// Everything logged so far (waits for pending kernels), oldest first; empties the log.
    func drain() throws -> [Entry] {
        let (untimed, entries) = lock.withLock {
            defer {
                pending.removeAll()
                timed.removeAll()
            }
            return (pending, timed)
        }
        var result = entries
        for (name, times) in untimed {
            // A kernel without timestamps (a driver without profiling for it) is left out.
            guard let (start, end) = try times() else { continue }
            result.append(Entry(name: name, start: start, end: end))
        }
        return result.sorted { $0.start < $1.start }
    }
}
