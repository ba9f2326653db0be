import Dispatch
import Foundation
import Synchronization

/// The CPU backend's parallel loop: `run(parts:threads:)` runs `body(0) ... body(parts - 1)` on
/// the calling thread and on resident helper threads (and on threads waiting for a queue, see
/// `Completion.wait`), and returns when all are done.
///
/// Why not `DispatchQueue.concurrentPerform`: it wakes a parked thread on every call, 60-90 µs
/// measured here, a third of a 128 x 128 x 1024 product. The helpers here stay awake for a
/// short while after each job (as OpenBLAS's and OpenMP runtimes' threads do), so the products
/// and element-wise loops that follow one another on a stream reach them at once; then they park,
/// yielding the core to other streams' work. A job that finds the helpers busy with another
/// stream's job (or is nested in a job) runs all its parts on its own thread.
final class CPUWorkers: @unchecked Sendable {
    /// The process's pool: a helper for every core but the caller's.
    static let shared = CPUWorkers(helpers: ProcessInfo.processInfo.activeProcessorCount - 1)

    /// One call's work: parts are claimed by index, so a late helper only finds none left.
    private final class Job: @unchecked Sendable {
        let parts: Int
        let body: (Int) -> Void
        /// Helpers that may join (the caller's thread works too).
        let seats: Int
        let joined = Synchronization.Atomic<Int>(0)
        let next = Synchronization.Atomic<Int>(0)
        let done = Synchronization.Atomic<Int>(0)
        init(parts: Int, seats: Int, body: @escaping (Int) -> Void) {
            self.parts = parts
            self.seats = seats
            self.body = body
        }

        /// A helper's share: none once the seats are taken.
        func join() {
            if joined.add(1, ordering: .relaxed).oldValue < seats { work() }
        }

        /// Runs parts until none is left unclaimed.
        func work() {
            while true {
                let part = next.add(1, ordering: .relaxed).oldValue
                guard part < parts else { return }
                body(part)
                done.add(1, ordering: .releasing)
            }
        }
    }

    private let helpers: [Parking]
    /// Bumped for every job; helpers watch it while they spin.
    private let generation = Synchronization.Atomic<Int>(0)
    private let current = Mutex<Job?>(nil)
    /// Held by the one job the helpers serve.
    private let busy = Synchronization.Atomic<Bool>(false)

    init(helpers count: Int) {
        helpers = (0..<max(0, count)).map { _ in Parking() }
        // The helpers hold the pool: it lives as long as the process (`shared` is the one used).
        for (index, helper) in helpers.enumerated() {
            let thread = Thread { self.serve(helper) }
            thread.name = "sigprop-cpu-\(index + 1)"
            thread.start()
        }
    }

    /// Runs `body` for every part in 0..<parts on at most `threads` threads, the caller's
    /// included. Which thread runs a part never changes what the part computes, so callers
    /// that split work by its shape alone get the same numbers on any number of threads.
    func run(parts: Int, threads: Int, _ body: @escaping (Int) -> Void) {
        let seats = min(parts, threads, helpers.count + 1) - 1
        guard seats > 0,
            busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else {
            for part in 0..<parts { body(part) }
            return
        }
        let job = Job(parts: parts, seats: seats, body: body)
        current.withLock { $0 = job }
        generation.add(1, ordering: .sequentiallyConsistent)
        for helper in helpers.prefix(seats) { helper.notify() }
        job.work()
        // The parts left are running on helpers: short, so spin (yielding) to the end.
        while job.done.load(ordering: .acquiring) < parts { sched_yield() }
        current.withLock { $0 = nil }
        busy.store(false, ordering: .releasing)
    }

    /// Joins the job posted since generation `seen`, if any (a seat left).
    func help(seen: inout Int) {
        let now = generation.load(ordering: .sequentiallyConsistent)
        guard now != seen else { return }
        seen = now
        if let job = current.withLock({ $0 }) { job.join() }
    }

    private func serve(_ parking: Parking) {
        var seen = 0
        while true {
            parking.wait(spinAlways: true) {
                generation.load(ordering: .sequentiallyConsistent) != seen
            }
            Parking.occupying { help(seen: &seen) }
        }
    }
}

/// How the CPU backend's threads wait for work or for each other: spin a while (yielding the
/// core to any other thread that wants it), then sleep until `notify()`. Waking a sleeping
/// thread costs tens to hundreds of µs where the idle core has halted (virtual machines); within
/// the spin it is about 1 µs.
/// A thread spins only while the backend's working and spinning threads leave a core free:
/// a spinner sharing a core with a worker takes half its time.
final class Parking: @unchecked Sendable {
    /// How long a waiter spins before it sleeps.
    static let spinNanoseconds: UInt64 = 1_000_000

    /// The backend's threads that hold a core: running work (`occupying`) or spinning.
    private static let occupied = Synchronization.Atomic<Int>(0)

    /// Runs `work`, counted as holding a core.
    static func occupying<T>(_ work: () throws -> T) rethrows -> T {
        occupied.add(1, ordering: .relaxed)
        defer { occupied.subtract(1, ordering: .relaxed) }
        return try work()
    }

    private let semaphore = DispatchSemaphore(value: 0)
    /// True while the waiter sleeps (or is about to): whoever swaps it to false owes one signal.
    private let parked = Synchronization.Atomic<Bool>(false)

    /// Spins until `ready()` or the spin time is up; true if ready. `always`: spin even when
    /// no core looks free, and count as holding none (the pool's helpers, whose jobs come
    /// from threads that hold a core).
    @discardableResult
    static func spin(always: Bool = false, until ready: () -> Bool) -> Bool {
        if !always {
            guard occupied.add(1, ordering: .relaxed).newValue <= CPUKernels.machineCores else {
                occupied.subtract(1, ordering: .relaxed)
                return ready()
            }
        }
        defer { if !always { occupied.subtract(1, ordering: .relaxed) } }
        let start = DispatchTime.now().uptimeNanoseconds
        while !ready() {
            guard DispatchTime.now().uptimeNanoseconds - start < spinNanoseconds else {
                return false
            }
            sched_yield()
        }
        return true
    }

    /// Returns once `ready()` is true. For one waiting thread (a helper, a queue's worker);
    /// whoever makes `ready()` true calls `notify()` after it.
    func wait(spinAlways: Bool = false, until ready: () -> Bool) {
        while !Self.spin(always: spinAlways, until: ready) {
            parked.store(true, ordering: .sequentiallyConsistent)
            if ready(), parked.exchange(false, ordering: .sequentiallyConsistent) { return }
            // Asleep until notified, or a notifier already took the flag: take its signal.
            semaphore.wait()
        }
    }

    func notify() {
        if parked.exchange(false, ordering: .sequentiallyConsistent) { semaphore.signal() }
    }
}

/// Something threads wait for and one completes, once (a queued read, an event): waiters
/// spin, then sleep on a group, which any number of them may do.
final class Completion: @unchecked Sendable {
    private let done = Synchronization.Atomic<Bool>(false)
    private let group = DispatchGroup()

    init() { group.enter() }

    func complete() {
        done.store(true, ordering: .releasing)
        group.leave()
    }

    var isComplete: Bool { done.load(ordering: .acquiring) }

    /// While it spins, the waiting thread works on the pool's jobs too: the work it waits
    /// for may be one, and a helper may be off its core.
    func wait() {
        var seen = -1
        let ready = Parking.spin {
            CPUWorkers.shared.help(seen: &seen)
            return done.load(ordering: .acquiring)
        }
        if !ready { group.wait() }
    }
}
