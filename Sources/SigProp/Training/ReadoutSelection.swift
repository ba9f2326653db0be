/// One way a trained network predicts a class: its output layer (Forward-Forward: the linear
/// classifier), the nearest class target at a block (Signal Propagation), or the label of
/// highest goodness (Forward-Forward). Named as in the metrics: `output`,
/// `similarity@<block>`, `goodness`.
public enum ReadoutChoice: Sendable, Hashable, CustomStringConvertible {
    case output
    /// Similarity at `block` (1 = the signal block).
    case similarity(block: Int)
    case goodness
    /// A spiking network's output layer by its mean membrane (`output`: by spike count).
    case membrane

    /// Every readout of a network with `blockCount` blocks, in the order ties are settled in:
    /// the output layer, then the blocks from the first.
    public static func all(blockCount: Int) -> [ReadoutChoice] {
        [.output] + (1...max(1, blockCount)).map { .similarity(block: $0) }
    }

    public var description: String {
        switch self {
        case .output: "output"
        case .similarity(let block): "similarity@\(block)"
        case .goodness: "goodness"
        case .membrane: "membrane"
        }
    }
}

/// The readout `adaptive` predicts with after an epoch: whichever of every readout of the
/// network's rule (the output layer and the similarity at each block, or the linear
/// classifier and the goodness) is most accurate on the held-out validation split.
/// Scoring on data the network trains on would favour the readout that overfits most (an
/// early block on small sets); without a split the output layer, the reference's
/// prediction, is used.
public struct ReadoutSelection: Sendable, Equatable {
    /// The readout `adaptive` uses.
    public let adaptive: ReadoutChoice
    /// The block `similarity` uses (`TrainingOptions.readoutBlock`).
    public let similarityBlock: Int

    /// Chooses by `validationAccuracies` (keyed by `ReadoutChoice.description`; empty without a
    /// validation split) among `choices`. A readout must be strictly more accurate to win over
    /// one listed before it.
    public init(
        validationAccuracies: [String: Double], choices: [ReadoutChoice], similarityBlock: Int
    ) {
        var best = ReadoutChoice.output
        var bestAccuracy = -Double.infinity
        for choice in choices {
            if let accuracy = validationAccuracies[choice.description], accuracy > bestAccuracy {
                (best, bestAccuracy) = (choice, accuracy)
            }
        }
        adaptive = best
        self.similarityBlock = similarityBlock
    }

    /// `accuracies` of every readout with the `--readout` names added: `similarity` (at
    /// `similarityBlock`) and `adaptive`.
    public func naming(_ accuracies: [String: Double]) -> [String: Double] {
        var named = accuracies
        if let similarity = accuracies[
            ReadoutChoice.similarity(block: similarityBlock).description]
        {
            named[Readout.similarity.rawValue] = similarity
        }
        named[Readout.adaptive.rawValue] = accuracies[adaptive.description]
        return named
    }
}
