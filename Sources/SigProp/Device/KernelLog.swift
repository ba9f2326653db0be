import Foundation

/// The operations a queue ran, with their times, for traces: each OpenCL kernel with its
/// profiling event (start and end read once it completed), each CPU operation with the host
/// clock around it. Attached to a queue only while tracing.
final class KernelLog: @unchecked Sendable {
    struct Entry {
        let name: String
        let start: UInt64
        let end: UInt64
    }

    private let lock = NSLock()
    private var timed: [Entry] = []
    private var pending: [(name: String, event: CLEvent)] = []

    func add(_ name: String, event: CLEvent) { lock.withLock { pending.append((name, event)) } }
    func add(_ name: String, start: UInt64, end: UInt64) { lock.withLock { timed.append(Entry(name: name, start: start, end: end)) } }

    /// Everything logged so far (waits for pending kernels), oldest first; empties the log.
    func drain() throws -> [Entry] {
        let (events, entries) = lock.withLock {
            defer { pending.removeAll(); timed.removeAll() }
            return (pending, timed)
        }
        var result = entries
        for (name, event) in events {
            try event.wait()
            // A kernel without timestamps (a driver without profiling for it) is left out.
            guard let start = try? event.startNanoseconds(), let end = try? event.endNanoseconds() else { continue }
            result.append(Entry(name: name, start: start, end: end))
        }
        return result.sorted { $0.start < $1.start }
    }
}
