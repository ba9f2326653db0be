import Dispatch
import Foundation

/// Carries what a stage hands on to the next stage when that stage runs in another process.
/// `send` returns at once: a worker thread waits for the tensors' event, reads them to the
/// host and sends them, so the stage's update and the next batch are enqueued meanwhile. One
/// worker keeps the messages in the order they were asked for, which is the order the peer
/// receives them in.
final class RankLink: @unchecked Sendable {
    let group: any ProcessGroup
    private let worker = HostWorker(label: "sigprop.rank-send")
    private let lock = NSLock()
    /// Bytes sent and received so far (activations only), and the seconds the host waited
    /// for activations to arrive.
    private(set) var bytesSent = 0
    private(set) var bytesReceived = 0
    private(set) var secondsWaiting = 0.0

    init(group: any ProcessGroup) {
        self.group = group
    }

    /// Sends `tensors` to `rank` once `ready` (an event after which they are final) completes.
    /// The returned group is left once the tensors were read (or the send failed): until then
    /// their storage must not be reused.
    func send(_ tensors: [Tensor], after ready: Event, to rank: Int) -> DispatchGroup {
        let read = DispatchGroup()
        read.enter()
        worker.async { [self] in
            defer { read.leave() }
            try ready.wait()
            let message = Self.pack(try tensors.map { ($0.shape, try $0.device.read($0)) })
            try group.send(message, to: rank, tag: ProcessGroupTag.activations)
            lock.withLock { bytesSent += message.count }
        }
        return read
    }

    /// The tensors `rank` handed on for the next batch, as tensors of `stream`'s device
    /// (waits for them).
    func receive(from rank: Int, on stream: Stream) throws -> [Tensor] {
        let start = DispatchTime.now().uptimeNanoseconds
        let message = try group.receive(from: rank, tag: ProcessGroupTag.activations)
        let waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        lock.withLock {
            bytesReceived += message.count
            secondsWaiting += waited
        }
        return try Self.unpack(message).map { shape, values in
            try stream.device.tensor(values, shape: shape, on: stream)
        }
    }

    /// Throws the first error a send met.
    func check() throws { try worker.check() }

    /// Waits for every send asked for so far.
    func drain() { worker.drain() }

    /// Tensors as one message: their count, each shape (rank, then dimensions) as UInt32, then
    /// every tensor's floats in order.
    static func pack(_ tensors: [(shape: [Int], values: [Float])]) -> [UInt8] {
        var header: [UInt32] = [UInt32(tensors.count)]
        for (shape, _) in tensors { header += [UInt32(shape.count)] + shape.map { UInt32($0) } }
        var message = header.withUnsafeBytes { Array($0) }
        for (_, values) in tensors { values.withUnsafeBytes { message.append(contentsOf: $0) } }
        return message
    }

    static func unpack(_ message: [UInt8]) throws -> [(shape: [Int], values: [Float])] {
        var offset = 0
        func word() throws -> Int {
            guard offset + 4 <= message.count else { throw malformed }
            defer { offset += 4 }
            return Int(
                message[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        }
        let count = try word()
        var shapes: [[Int]] = []
        for _ in 0..<count { shapes.append(try (0..<word()).map { _ in try word() }) }
        return try shapes.map { shape in
            let bytes = shape.reduce(1, *) * MemoryLayout<Float>.stride
            guard offset + bytes <= message.count else { throw malformed }
            defer { offset += bytes }
            var values = [Float](repeating: 0, count: shape.reduce(1, *))
            values.withUnsafeMutableBytes { target in
                message.withUnsafeBytes { source in
                    target.copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: source[offset..<offset + bytes]))
                }
            }
            return (shape, values)
        }
    }

    private static var malformed: SigPropError {
        .configuration(
            "a message of activations between ranks is cut short: the ranks run different "
                + "versions of train or different models")
    }
}
