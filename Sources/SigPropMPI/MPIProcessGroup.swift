import CMPI
import Foundation
import SigProp

/// `ProcessGroup` on MPI's world communicator (Open MPI from Debian). One per process:
/// `init` initialises MPI with the thread support the pipeline needs, `finalize` ends it.
public final class MPIProcessGroup: ProcessGroup, @unchecked Sendable {
    public let rank: Int
    public let size: Int

    /// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`): Open MPI and
    /// PMIx set these variables in every rank's environment.
    public static var isLaunchedByMPI: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
    }

    public init() throws {
        // Gradient sums are large: libnbc's ring sends each value about twice over the links,
        // where its default for fewer than 4 ranks (a reduce, then a broadcast) sends it
        // twice per rank and serialises the two. A value set by the user is kept.
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "ring", 0)
        var provided: Int32 = 0
        let status = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_MULTIPLE), &provided)
        guard status == MPI_SUCCESS else {
            throw SigPropError.configuration("MPI_Init_thread failed (MPI error \(status))")
        }
        guard provided >= Int32(MPI_THREAD_MULTIPLE) else {
            MPI_Finalize()
            throw SigPropError.configuration(
                "this MPI library does not support MPI_THREAD_MULTIPLE, which the pipeline over "
                    + "ranks needs (it sends from a worker thread); use Open MPI built with "
                    + "thread support (Debian's is)")
        }
        var rank: Int32 = 0
        var size: Int32 = 0
        MPI_Comm_rank(sigprop_mpi_comm_world(), &rank)
        MPI_Comm_size(sigprop_mpi_comm_world(), &size)
        self.rank = Int(rank)
        self.size = Int(size)
    }

    /// Ends MPI after every rank got here (a clean exit).
    public func finalize() {
        MPI_Finalize()
    }

    /// Stops every rank: MPI ends the processes of all ranks and `mpirun` names this one.
    public func abort(code: Int32) -> Never {
        MPI_Abort(sigprop_mpi_comm_world(), code)
        exit(code)
    }

    // Every call starts a non-blocking operation and waits for it by polling with short
    // sleeps: MPI's blocking calls spin on their core, and a rank's host thread or send worker
    // spinning there while the messages are late takes the core from the rank's own compute
    // (ranks bound to a core each ran at half speed).

    public func send(_ bytes: [UInt8], to rank: Int, tag: Int) throws {
        try checkCount(bytes.count, "a message to rank \(rank)")
        try bytes.withUnsafeBytes { buffer in
            var request: MPI_Request? = sigprop_mpi_request_null()
            try check(
                MPI_Isend(
                    buffer.baseAddress, Int32(buffer.count), sigprop_mpi_byte(), Int32(rank),
                    Int32(tag), sigprop_mpi_comm_world(), &request), "MPI_Isend to rank \(rank)")
            try wait(for: &request, "sending to rank \(rank)")
        }
    }

    public func receive(from rank: Int, tag: Int) throws -> [UInt8] {
        var status = MPI_Status()
        var arrived: Int32 = 0
        try poll("waiting for a message from rank \(rank)") {
            try check(
                MPI_Iprobe(Int32(rank), Int32(tag), sigprop_mpi_comm_world(), &arrived, &status),
                "MPI_Iprobe from rank \(rank)")
            return arrived != 0
        }
        var count: Int32 = 0
        try check(MPI_Get_count(&status, sigprop_mpi_byte(), &count), "MPI_Get_count")
        var bytes = [UInt8](repeating: 0, count: Int(count))
        try bytes.withUnsafeMutableBytes { buffer in
            var request: MPI_Request? = sigprop_mpi_request_null()
            try check(
                MPI_Irecv(
                    buffer.baseAddress, count, sigprop_mpi_byte(), Int32(rank), Int32(tag),
                    sigprop_mpi_comm_world(), &request), "MPI_Irecv from rank \(rank)")
            try wait(for: &request, "receiving from rank \(rank)")
        }
        return bytes
    }

    public func broadcast(_ values: inout [Float], from root: Int) throws {
        try checkCount(values.count, "a broadcast")
        try values.withUnsafeMutableBytes { buffer in
            var request: MPI_Request? = sigprop_mpi_request_null()
            try check(
                MPI_Ibcast(
                    buffer.baseAddress, Int32(buffer.count / 4), sigprop_mpi_float(), Int32(root),
                    sigprop_mpi_comm_world(), &request), "MPI_Ibcast from rank \(root)")
            try wait(for: &request, "a broadcast from rank \(root)")
        }
    }

    public func sum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBytes { try sum($0, count: $0.count / 8, sigprop_mpi_double()) }
    }

    public func sum(_ values: inout [Float]) throws {
        try values.withUnsafeMutableBytes { try sum($0, count: $0.count / 4, sigprop_mpi_float()) }
    }

    /// Every rank's `count` values of `type` in `buffer`, summed in place.
    private func sum(_ buffer: UnsafeMutableRawBufferPointer, count: Int, _ type: MPI_Datatype)
        throws
    {
        try checkCount(count, "a sum")
        // From a copy, not in place: libnbc takes its binomial algorithm for sums in place.
        let values = Array(buffer)
        var request: MPI_Request? = sigprop_mpi_request_null()
        try values.withUnsafeBytes { source in
            try check(
                MPI_Iallreduce(
                    source.baseAddress, buffer.baseAddress, Int32(count), type,
                    sigprop_mpi_sum(), sigprop_mpi_comm_world(), &request), "MPI_Iallreduce")
            try wait(for: &request, "a sum over the ranks")
        }
    }

    /// Waits for `request` to complete (MPI_Test drives the transfer along).
    private func wait(for request: inout MPI_Request?, _ what: String) throws {
        var done: Int32 = 0
        try poll(what) {
            try check(MPI_Test(&request, &done, sigprop_mpi_status_ignore()), "MPI_Test: \(what)")
            return done != 0
        }
    }

    /// Calls `ready` until it says so, sleeping between calls: 10 µs at first, doubling to
    /// 200 µs, a short delay beside a batch's milliseconds of compute.
    private func poll(_ what: String, _ ready: () throws -> Bool) throws {
        var pause: UInt32 = 10
        while try !ready() {
            usleep(pause)
            pause = min(pause * 2, 200)
        }
    }

    /// MPI counts elements in a C int.
    private func checkCount(_ count: Int, _ what: String) throws {
        guard count <= Int(Int32.max) else {
            throw SigPropError.configuration(
                "rank \(rank): \(what) of \(count) elements is more than MPI sends at once "
                    + "(\(Int32.max)); use smaller batches")
        }
    }

    private func check(_ status: Int32, _ call: String) throws {
        guard status == MPI_SUCCESS else {
            throw SigPropError.configuration("rank \(rank): \(call) failed (MPI error \(status))")
        }
    }
}
