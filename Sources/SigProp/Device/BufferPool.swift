import Foundation

/// Tensor memory that outlives its tensor: a tensor's storage goes back to its device's pool
/// when the last tensor viewing it is gone (a reshaped view shares it).
final class DeviceBuffer: @unchecked Sendable {
    let storage: TensorStorage
    let count: Int
    private let pool: BufferPool?

    init(storage: TensorStorage, count: Int, pool: BufferPool?) {
        self.storage = storage
        self.count = count
        self.pool = pool
    }

    deinit { pool?.recycle(storage, count: count) }
}

/// Reuses tensor storage between batches instead of allocating per batch, safely under
/// asynchronous streams. Tensors allocated on a stream that has a pool come from it and
/// go back to it. A storage freed on the host may still be read or written by work already
/// enqueued, so it is quarantined, tagged with the current generation, until the owner says
/// that all work enqueued up to that generation has completed (`reclaim(through:)`). The
/// trainer owns one pool for its streams, opens a generation per batch and reclaims when the
/// batch retires; work on other streams never sees its storage.
final class BufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var generation = 0
    private var free: [Int: [TensorStorage]] = [:]
    private var quarantine: [(generation: Int, count: Int, storage: TensorStorage)] = []
    /// Allocations the pool could not serve (fresh storage).
    private(set) var misses = 0

    /// Opens a new generation and returns it: storages freed from now on carry it.
    func advance() -> Int {
        lock.withLock {
            generation += 1
            return generation
        }
    }

    /// All work enqueued before generation `last` ended has completed: storages freed up to
    /// then may be reused.
    func reclaim(through last: Int) {
        lock.withLock {
            var kept: [(generation: Int, count: Int, storage: TensorStorage)] = []
            for entry in quarantine {
                if entry.generation <= last {
                    free[entry.count, default: []].append(entry.storage)
                } else {
                    kept.append(entry)
                }
            }
            quarantine = kept
        }
    }

    /// Everything enqueued on the pool's streams has completed: every freed storage may be reused.
    func reclaimAll() { reclaim(through: Int.max) }

    /// A free storage of exactly `count` elements, if one is free.
    func take(count: Int) -> TensorStorage? {
        lock.withLock {
            guard let storage = free[count]?.popLast() else {
                misses += 1
                return nil
            }
            return storage
        }
    }

    func recycle(_ storage: TensorStorage, count: Int) {
        lock.withLock { quarantine.append((generation, count, storage)) }
    }

    /// Releases every free storage (an allocation that failed retries after this). Storages
    /// in quarantine stay until reclaimed.
    func releaseFree() -> Bool {
        lock.withLock {
            let had = !free.isEmpty
            free.removeAll()
            return had
        }
    }
}
