import Foundation

/// Set by Ctrl-C (SIGINT) or SIGTERM (what `timeout`, job schedulers and container stops
/// send): training finishes the current batch, writes a checkpoint and exits with 128 + the
/// signal's number, the shell's convention (130 for SIGINT, 143 for SIGTERM). A second signal
/// exits at once with the same status.
package final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var received: Int32?
    private var sources: [DispatchSourceSignal] = []

    public var isSet: Bool { lock.withLock { received != nil } }

    /// 128 + the number of the signal received.
    public var exitCode: Int32 { 128 + (lock.withLock { received } ?? SIGINT) }

    /// "interrupted (Ctrl-C)" or "terminated (SIGTERM)", for the message that ends the run.
    public var cause: String {
        lock.withLock { received } == SIGTERM ? "terminated (SIGTERM)" : "interrupted (Ctrl-C)"
    }

    public static func install() -> StopSignal {
        let flag = StopSignal()
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                let first = flag.lock.withLock { () -> Int32? in
                    defer { flag.received = flag.received ?? number }
                    return flag.received
                }
                // _exit, not exit: exit's handlers shut OpenBLAS down and unmap its buffers
                // while stage workers may still be inside a product.
                if let first { _exit(128 + first) }
                let name = number == SIGTERM ? "SIGTERM" : "Ctrl-C"
                FileHandle.standardError.write(
                    Data(
                        ("\n\(name): finishing the current batch, then writing a checkpoint "
                            + "(\(name) again to quit now)\n").utf8))
            }
            source.resume()
            flag.sources.append(source)
        }
        return flag
    }
}
