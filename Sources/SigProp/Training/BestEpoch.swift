/// The epoch with the best validation accuracy so far: the one `best.safetensors` holds and
/// the one `--early-stop` counts from. A later epoch must be strictly more accurate to replace
/// it, so on a plateau the earliest epoch stays.
public struct BestEpoch: Sendable, Equatable {
    /// 1-based.
    public let epoch: Int
    /// Of the readout the run predicts with (`TrainingOptions.readout`).
    public let accuracy: Double

    public init(epoch: Int, accuracy: Double) {
        self.epoch = epoch
        self.accuracy = accuracy
    }

    /// Whether an epoch of validation accuracy `accuracy` replaces `best` (nil: none yet).
    public static func improves(_ accuracy: Double, on best: BestEpoch?) -> Bool {
        guard let best else { return true }
        return accuracy > best.accuracy
    }

    /// Whether training stops after epoch `epoch` (1-based) with patience `patience`: that
    /// many epochs have passed since this one without a better validation accuracy.
    public func stops(after epoch: Int, patience: Int) -> Bool {
        epoch - self.epoch >= patience
    }
}

extension Checkpoint {
    static let bestEpochKey = "best_epoch"
    static let bestAccuracyKey = "best_validation_accuracy"

    /// Records the best epoch so far, so that a resumed run keeps `best.safetensors` and the
    /// early-stopping count where they were.
    public mutating func record(_ best: BestEpoch?) {
        metadata[Self.bestEpochKey] = best.map { String($0.epoch) }
        metadata[Self.bestAccuracyKey] = best.map { String($0.accuracy) }
    }

    /// The best epoch the checkpoint recorded; nil when it recorded none (no validation split,
    /// or written before best epochs were kept).
    public var bestEpoch: BestEpoch? {
        get throws {
            guard let epochText = metadata[Self.bestEpochKey] else { return nil }
            guard let epoch = Int(epochText), epoch >= 1,
                let accuracy = metadata[Self.bestAccuracyKey].flatMap(Double.init),
                accuracy.isFinite
            else {
                throw Self.invalid(
                    "metadata '\(Self.bestEpochKey)' or '\(Self.bestAccuracyKey)' is not a number")
            }
            return BestEpoch(epoch: epoch, accuracy: accuracy)
        }
    }
}
