/// The order in which a training epoch visits the data set: a permutation of `0..<count`
/// fixed by `(seed, epoch)`, cut into batches of `batchSize`.
///
/// The last partial batch is dropped (PyTorch's `drop_last=True`): every step sees a full
/// batch, so batch statistics and the learning rate per example do not jump on the last
/// step. The shuffle changes every epoch, so each item is still seen in almost every epoch.
///
/// The shuffle is written out here (Fisher–Yates with unbiased bounded draws from
/// `SeededGenerator`) rather than `Array.shuffle(using:)`, whose algorithm the standard
/// library does not promise to keep: the same seed gives the same order on every toolchain.
public struct BatchOrder: Sendable {
    public let count: Int
    public let batchSize: Int
    public let seed: UInt64

    /// Throws when `batchSize` is below 1 or larger than `count` (an epoch would then have no
    /// full batch at all).
    public init(count: Int, batchSize: Int, seed: UInt64) throws {
        guard batchSize >= 1 else {
            throw SigPropError.configuration(
                "batch size \(batchSize) must be at least 1: pass a positive --batch-size")
        }
        guard batchSize <= count else {
            throw SigPropError.configuration(
                "batch size \(batchSize) is larger than the \(count) training examples, so no "
                    + "full batch fits (the last partial batch is dropped): pass a --batch-size "
                    + "of at most \(count)"
            )
        }
        self.count = count
        self.batchSize = batchSize
        self.seed = seed
    }

    /// Full batches per epoch.
    public var batchesPerEpoch: Int { count / batchSize }

    /// The batches of `epoch`: disjoint, each `batchSize` indices, `count % batchSize`
    /// indices left out.
    public func batches(epoch: Int) -> [[Int]] {
        let order = permutation(epoch: epoch)
        return (0..<batchesPerEpoch).map { Array(order[($0 * batchSize)..<(($0 + 1) * batchSize)]) }
    }

    /// All of `0..<count` in the order of `epoch`.
    public func permutation(epoch: Int) -> [Int] {
        var generator = SeededGenerator(seed: seed ^ Self.epochKey(epoch))
        return Self.shuffled(count: count, using: &generator)
    }

    /// All of `0..<count` in an order drawn from `generator`.
    static func shuffled(count: Int, using generator: inout SeededGenerator) -> [Int] {
        var order = Array(0..<count)
        var i = count - 1
        while i > 0 {
            let j = Int(Self.draw(below: UInt64(i + 1), using: &generator))
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }

    /// A well-mixed 64-bit key per epoch. Seeding with `seed + epoch` instead would make the
    /// SplitMix streams of neighbouring epochs the same stream shifted by one step.
    static func epochKey(_ epoch: Int) -> UInt64 {
        var mixer = SeededGenerator(seed: UInt64(bitPattern: Int64(epoch)))
        return mixer.next()
    }

    /// Uniform in `0..<bound` (Lemire's multiply-and-reject, no modulo bias).
    static func draw(below bound: UInt64, using generator: inout SeededGenerator) -> UInt64 {
        var product = generator.next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold {
                product = generator.next().multipliedFullWidth(by: bound)
            }
        }
        return product.high
    }
}
