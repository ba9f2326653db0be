import Dispatch
import Foundation

/// A thread that does host-side work for streams, in the order it was asked for: copies
/// between devices through the host (`DeviceBridge`), activations sent to another rank
/// (`RankLink`), gradient sums over ranks (`GradientExchange`). A job waits for its inputs'
/// events itself, so the host thread that asks for it never blocks. The first error a job
/// throws is kept for `check`, and later jobs still run: the events they complete are always
/// completed, so no stream waits forever.
final class HostWorker: @unchecked Sendable {
    private let queue: DispatchQueue
    private let lock = NSLock()
    private var failure: (any Error)?
    private var copyStreams: [ObjectIdentifier: Stream] = [:]

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Runs `job` after the jobs asked for before it.
    func async(_ job: @escaping @Sendable () throws -> Void) {
        queue.async { [self] in
            do { try job() } catch { record(error) }
        }
    }

    /// Runs `job`, then completes `event` (a user event of `device`), also after a failure.
    func async(
        completing event: Event, of device: Device, _ job: @escaping @Sendable () throws -> Void
    ) {
        queue.async { [self] in
            do { try job() } catch { record(error) }
            do { try device.complete(event) } catch { record(error) }
        }
    }

    /// A stream of `device` for this worker's writes (one per device, made when first asked).
    func copyStream(on device: Device) throws -> Stream {
        try lock.withLock {
            if let existing = copyStreams[ObjectIdentifier(device)] { return existing }
            let created = try device.makeStream()
            copyStreams[ObjectIdentifier(device)] = created
            return created
        }
    }

    /// Throws the first error a job met.
    func check() throws {
        if let failure = lock.withLock({ failure }) { throw failure }
    }

    /// Waits for every job asked for so far.
    func drain() { queue.sync {} }

    private func record(_ error: any Error) {
        lock.withLock { if failure == nil { failure = error } }
    }
}
