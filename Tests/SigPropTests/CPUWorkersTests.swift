import Dispatch
import Foundation
import Synchronization
import Testing

@testable import SigProp

/// The CPU backend's parallel loop: every part runs exactly once and `run` returns only after
/// all of them, whether the helpers are idle, parked, busy with another caller's job, or the
/// call is nested inside a part.
@Suite struct CPUWorkersTests {
    /// Counts per part, filled by `run`; checked after it returns.
    final class Tally: @unchecked Sendable {
        let counts: Mutex<[Int]>
        init(_ parts: Int) { counts = Mutex(Array(repeating: 0, count: parts)) }
        func hit(_ part: Int) { counts.withLock { $0[part] += 1 } }
        var values: [Int] { counts.withLock { $0 } }
    }

    /// The ranges work is cut into, for any count and number of parts (a 16-core machine once
    /// cut 40 rows into 16 parts of 3 and asked for rows 42..<40).
    @Test func sharesCoverTheRangeInOrder() {
        for parts in 1...17 {
            for count in 0...40 {
                let ranges = (0..<parts).map { CPUKernels.share($0, of: parts, count) }
                #expect(
                    ranges.first?.lowerBound == 0 && ranges.last?.upperBound == count,
                    "\(count) in \(parts)")
                #expect(
                    zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                    "\(count) in \(parts)")
                let sizes = ranges.map(\.count)
                #expect(
                    sizes.max()! - sizes.min()! <= 1 && (count < parts || sizes.min()! >= 1),
                    "\(count) in \(parts): \(sizes)")
            }
        }
    }

    @Test(arguments: [0, 1, 2, 3, 7, 64])
    func everyPartRunsOnce(parts: Int) {
        let workers = CPUWorkers(helpers: 3)
        // Back to back (helpers spinning), then after the helpers have parked.
        for pause in [0, 3_000] {
            usleep(useconds_t(pause))
            let tally = Tally(parts)
            workers.run(parts: parts, threads: 4) { part in
                // Slow parts, longer than any spin: run must wait for them, and lose or repeat
                // none.
                if part == 0 || part == parts - 1 { usleep(2_000) }
                tally.hit(part)
            }
            #expect(tally.values == Array(repeating: 1, count: parts), "after a \(pause) µs pause")
        }
    }

    /// A stream limited to one core runs every part on its own thread.
    @Test func oneThreadRunsOnTheCaller() {
        let workers = CPUWorkers(helpers: 3)
        let caller = pthread_self()
        let others = Mutex(0)
        workers.run(parts: 8, threads: 1) { _ in
            if pthread_equal(pthread_self(), caller) == 0 { others.withLock { $0 += 1 } }
        }
        #expect(others.withLock { $0 } == 0)
    }

    @Test func concurrentAndNestedCallers() {
        let workers = CPUWorkers(helpers: 1)
        let callers = 4
        let parts = 5
        let tallies = (0..<callers).map { _ in Tally(parts * parts) }
        // Several threads post at once (all but one find the helpers busy and run alone); each
        // part posts a nested job (which runs on the part's thread).
        DispatchQueue.concurrentPerform(iterations: callers) { caller in
            for _ in 0..<20 {
                let tally = tallies[caller]
                workers.run(parts: parts, threads: 4) { outer in
                    workers.run(parts: parts, threads: 4) { inner in
                        tally.hit(outer * parts + inner)
                    }
                }
            }
        }
        for (caller, tally) in tallies.enumerated() {
            #expect(tally.values == Array(repeating: 20, count: parts * parts), "caller \(caller)")
        }
    }
}
