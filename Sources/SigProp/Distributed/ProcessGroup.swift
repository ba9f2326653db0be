/// The processes that train one network together (the ranks of `mpirun … train
/// --distributed`): which one this is, and the messages between them. The library links no
/// transport; the `SigPropMPI` library implements this on MPI.
///
/// Every call may block until its peers take part. Calls come from several threads (the
/// pipeline sends from a worker while the host thread receives), so an implementation must
/// be safe to call concurrently (MPI: `MPI_THREAD_MULTIPLE`).
public protocol ProcessGroup: AnyObject, Sendable {
    /// This process's rank, `0..<size`.
    var rank: Int { get }
    /// How many processes train together.
    var size: Int { get }
    /// Sends `bytes` to `rank`. Messages from one rank to another with the same tag arrive in
    /// the order they were sent.
    func send(_ bytes: [UInt8], to rank: Int, tag: Int) throws
    /// The next message from `rank` with `tag`; waits for it.
    func receive(from rank: Int, tag: Int) throws -> [UInt8]
    /// `root`'s `values` on every rank (every rank passes an array of the same length).
    func broadcast(_ values: inout [Float], from root: Int) throws
    /// The element-wise sum of every rank's `values`, on every rank.
    func sum(_ values: inout [Double]) throws
    func sum(_ values: inout [Float]) throws
}

/// Message tags of the pipeline over ranks.
enum ProcessGroupTag {
    /// What a stage hands on to the next stage's rank.
    static let activations = 1
    /// A batch's losses and correct predictions, for rank 0's progress and metrics.
    static let batchFigures = 2
    /// A rank's trace, for the one rank 0 writes.
    static let trace = 3
}
