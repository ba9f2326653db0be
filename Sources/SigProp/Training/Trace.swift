import Foundation

/// A record of when each stage of each batch ran, written as a Chrome trace-event file
/// (opens in Perfetto or chrome://tracing): one row per stage, one span per stage part and
/// batch, named like `block3.forward b17`, and inside it a span per kernel (`gemm_tiled`,
/// `adam_step`; on the CPU per operation). Times come from the streams' events and the
/// kernels' OpenCL profiling timestamps, or the host clock on the CPU.
public final class Trace {
    public struct Span: Sendable, Equatable {
        public let name: String
        /// The row: the stage (0 = block1, the signal block; the last = the output layer).
        public let stage: Int
        public let epoch: Int
        public let batch: Int
        /// Nanoseconds of the device's clock.
        public let start: UInt64
        public let end: UInt64
    }

    public let rowNames: [String]
    /// Stage parts: `block3.forward b17` and so on.
    public private(set) var spans: [Span] = []
    /// The kernels (CPU: operations) inside them, each in its stage's row.
    public private(set) var kernels: [Span] = []
    /// Spans recorded and not yet resolved, with their events.
    private(set) var pending:
        [(name: String, stage: Int, epoch: Int, batch: Int, start: Event, end: Event)] = []

    public init(rowNames: [String]) { self.rowNames = rowNames }

    /// Records a span between two events (resolved to times by `resolve()`).
    public func add(_ name: String, stage: Int, epoch: Int, batch: Int, start: Event, end: Event) {
        pending.append((name, stage, epoch, batch, start, end))
    }

    /// Spans left out because the driver gave no timestamp for their events (profiling of
    /// markers is optional for some drivers).
    public private(set) var untimed = 0

    /// Turns recorded events into times (blocks until they completed) and lets the events go.
    public func resolve() throws {
        for entry in pending {
            try entry.end.wait()
            guard let start = try? entry.start.completionNanoseconds(),
                let end = try? entry.end.completionNanoseconds()
            else {
                untimed += 1
                continue
            }
            spans.append(
                Span(
                    name: entry.name, stage: entry.stage, epoch: entry.epoch, batch: entry.batch,
                    start: start, end: max(start, end)))
        }
        pending.removeAll()
    }

    /// Files the kernels one stream ran under the stage spans of `stages` (the stages that run
    /// on that stream) that contain their start; kernels outside every such span (work of no
    /// batch) are left out.
    func addKernels(_ entries: [KernelLog.Entry], stages: Set<Int>) {
        let owners = spans.filter { stages.contains($0.stage) }.sorted { $0.start < $1.start }
        for entry in entries {
            // The last span starting at or before the kernel.
            var low = 0
            var high = owners.count
            while low < high {
                let middle = (low + high) / 2
                if owners[middle].start <= entry.start { low = middle + 1 } else { high = middle }
            }
            guard low > 0, owners[low - 1].end >= entry.start else { continue }
            let owner = owners[low - 1]
            kernels.append(
                Span(
                    name: entry.name, stage: owner.stage, epoch: owner.epoch, batch: owner.batch,
                    start: entry.start,
                    end: max(entry.start, entry.end)))
        }
    }

    /// Of the time at least one stage was busy, the share during which two or more were.
    public var overlapShare: Double { Self.overlapShare(of: spans) }

    static func overlapShare(of spans: [Span]) -> Double {
        // Busy intervals merged per row first, so one row's adjacent spans don't count twice.
        var edges: [(time: UInt64, delta: Int)] = []
        for row in Set(spans.map(\.stage)) {
            for (start, end) in Self.merged(
                spans.filter { $0.stage == row }.map { ($0.start, $0.end) })
            {
                edges.append((start, 1))
                edges.append((end, -1))
            }
        }
        edges.sort { $0.time < $1.time || ($0.time == $1.time && $0.delta < $1.delta) }
        var busy = 0
        var previous: UInt64 = 0
        var any: UInt64 = 0
        var several: UInt64 = 0
        for edge in edges {
            let span = edge.time - previous
            if busy >= 1 { any += span }
            if busy >= 2 { several += span }
            busy += edge.delta
            previous = edge.time
        }
        return any == 0 ? 0 : Double(several) / Double(any)
    }

    static func merged(_ intervals: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
        var result: [(UInt64, UInt64)] = []
        for (start, end) in intervals.sorted(by: { $0.0 < $1.0 }) {
            if let last = result.last, start <= last.1 {
                result[result.count - 1].1 = max(last.1, end)
            } else {
                result.append((start, end))
            }
        }
        return result
    }

    /// The trace-event JSON: complete events ("ph": "X") in microseconds from the first span,
    /// and thread-name metadata naming each row.
    public func json() throws -> Data {
        try Self.json(events(origin: origin ?? 0))
    }

    /// Where the spans begin, in nanoseconds of the device's clock (nil: no span yet).
    var origin: UInt64? { (spans + kernels).map(\.start).min() }

    /// The spans and kernels as trace events of process `pid` (a row per stage; with a
    /// `processName`, metadata naming the process), in microseconds from `origin`.
    func events(origin: UInt64, pid: Int = 1, processName: String? = nil) -> [[String: Any]] {
        var events: [[String: Any]] = rowNames.enumerated().map { index, name in
            [
                "name": "thread_name", "ph": "M", "pid": pid, "tid": index + 1,
                "args": ["name": name],
            ]
        }
        if let processName {
            events.append([
                "name": "process_name", "ph": "M", "pid": pid, "args": ["name": processName],
            ])
        }
        func microseconds(_ time: UInt64) -> Double {
            (Double(time) - Double(origin)) / 1000
        }
        for span in spans {
            events.append([
                "name": span.name,
                "cat": span.name.split(separator: " ").first?.split(separator: ".").last.map(
                    String.init) ?? "stage", "ph": "X", "pid": pid,
                "tid": span.stage + 1, "ts": microseconds(span.start),
                "dur": Double(span.end - span.start) / 1000,
                "args": ["epoch": span.epoch, "batch": span.batch],
            ])
        }
        for kernel in kernels {
            events.append([
                "name": kernel.name, "cat": "kernel", "ph": "X", "pid": pid,
                "tid": kernel.stage + 1, "ts": microseconds(kernel.start),
                "dur": Double(kernel.end - kernel.start) / 1000,
                "args": ["epoch": kernel.epoch, "batch": kernel.batch],
            ])
        }
        return events
    }

    static func json(_ events: [[String: Any]]) throws -> Data {
        try JSONSerialization.data(
            withJSONObject: ["traceEvents": events, "displayTimeUnit": "ms"], options: [.sortedKeys]
        )
    }

    /// Writes `data` atomically (`AtomicFile`): a failed or killed write keeps the old trace.
    public static func write(_ data: Data, to url: URL) throws {
        let reason: String
        do {
            try AtomicFile.write(data, to: url)
            return
        } catch .folder(_, let why), .temporary(_, let why) {
            reason = why
        } catch .write(let why) {
            reason = why
        }
        throw OutputFiles.problem(
            flag: "--trace", path: url.path, action: "write the trace", reason: reason)
    }

    /// Writes the JSON atomically (`AtomicFile`): a failed or killed write keeps the old trace.
    public func write(to url: URL) throws {
        try Self.write(try json(), to: url)
    }
}
