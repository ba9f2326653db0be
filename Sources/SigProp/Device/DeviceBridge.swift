/// Copies activations between devices without blocking the host. `copy` returns at once with
/// the destination tensor and makes the destination stream wait for a user event; a worker
/// thread waits for the source's event, reads the values through the host, writes them on a
/// copy stream of the destination device, waits for that write and completes the event. One
/// worker per bridge keeps the copies in the order they were asked for.
public final class DeviceBridge: @unchecked Sendable {
    private let worker = HostWorker(label: "sigprop.bridge")

    public init() {}

    /// A tensor of `stream`'s device that holds `tensor`'s values (from another device) for
    /// the work enqueued on `stream` from now on, once `ready` (an event of `tensor`'s device
    /// after which the values are final) has completed.
    public func copy(_ tensor: Tensor, after ready: Event, to stream: Stream) throws -> Tensor {
        let target = stream.device
        guard tensor.device !== target else { return tensor }
        let destination = try target.allocate(tensor.shape, on: stream)
        let arrived = try target.makeUserEvent()
        let copyStream = try worker.copyStream(on: target)
        try stream.wait(for: arrived)
        worker.async(completing: arrived, of: target) {
            try ready.wait()
            try target.write(try tensor.device.read(tensor), to: destination, on: copyStream)
            try copyStream.synchronize()
        }
        return destination
    }

    /// Throws the first error a copy met.
    public func check() throws { try worker.check() }

    /// Waits for every copy asked for so far.
    public func drain() { worker.drain() }
}
