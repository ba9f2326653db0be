import Dispatch
import Foundation

/// Averages a data-parallel step's gradients over the ranks without blocking the host. A step
/// asks for its parameters' gradients (`UpdateRule.apply`): the step's stream waits for a user
/// event while a worker thread waits for the gradients, reads them, weights them by this
/// rank's share of the batch, sums them over the ranks, writes the sums back and completes the
/// event. The host meanwhile enqueues the next block, whose forward pass overlaps the sum.
/// One worker keeps the sums in the order the steps were enqueued, which every rank shares
/// (the same network, the same schedule), as MPI's collectives need.
final class GradientExchange: @unchecked Sendable {
    let group: any ProcessGroup
    private let worker = HostWorker(label: "sigprop.gradient-exchange")
    private let lock = NSLock()
    /// This rank's rows over the batch's rows, for the batch being enqueued: the rank's
    /// gradient is the mean over its rows, the batch's the mean over all of them.
    var share: Float = 1
    /// Floats summed over the ranks so far, and the seconds the worker spent in the sums
    /// (waiting for the other ranks included).
    private(set) var valuesExchanged = 0
    private(set) var secondsSumming = 0.0

    init(group: any ProcessGroup) {
        self.group = group
    }

    /// Replaces `gradients` (tensors of one device) by the batch's: every rank's, weighted by
    /// its share, summed. With a `stream`, the work `stream` takes next waits for the sum;
    /// without one, this waits for it.
    func average(_ gradients: [Tensor], on stream: Stream?) throws {
        guard let device = gradients.first?.device else { return }
        let share = self.share
        guard let stream else {
            try device.defaultStream.synchronize()
            try write(try sum(gradients, share: share), to: gradients, on: device.defaultStream)
            return
        }
        let ready = try stream.record()
        let summed = try device.makeUserEvent()
        let copyStream = try worker.copyStream(on: device)
        try stream.wait(for: summed)
        worker.async(completing: summed, of: device) { [self] in
            try ready.wait()
            try write(try sum(gradients, share: share), to: gradients, on: copyStream)
            try copyStream.synchronize()
        }
    }

    /// Every rank's `gradients` weighted by its `share`, summed, as one array.
    private func sum(_ gradients: [Tensor], share: Float) throws -> [Float] {
        var values = try gradients.flatMap { try $0.device.read($0) }
        for index in values.indices { values[index] *= share }
        let start = DispatchTime.now().uptimeNanoseconds
        try group.sum(&values)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        lock.withLock { secondsSumming += seconds }
        return values
    }

    private func write(_ values: [Float], to gradients: [Tensor], on stream: Stream) throws {
        var offset = 0
        for gradient in gradients {
            try gradient.device.write(
                Array(values[offset..<offset + gradient.count]), to: gradient, on: stream)
            offset += gradient.count
        }
        lock.withLock { valuesExchanged += values.count }
    }

    /// Throws the first error a sum met.
    func check() throws { try worker.check() }

    /// Waits for every sum asked for so far.
    func drain() { worker.drain() }
}
