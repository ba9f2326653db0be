/// One stage of a network trained by a forward-only rule: a learning block, or the readout
/// the network trains last. A batch goes through the stages in order; each stage reads only
/// what the stage before it handed on, and learns from its own pass. What the tensors handed
/// on are is the rule's: Signal Propagation hands on the input stream and the target stream
/// (the signal S is the target's projection); Forward-Forward the positive, negative and
/// neutral passes (S is the label written into the input). The `Pipeline` never looks inside.
public protocol TrainingStage: AnyObject {
    /// Enqueues this stage's forward pass of `batch` on `stream`: `inputs` are what the
    /// previous stage handed on, on this stage's device (the first stage gets none and reads
    /// `batch.images`). The update waits in the returned pass.
    func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws -> StagePass
    /// The stage's optimizers (their parameters are what it learns).
    var optimizers: [Optimizer] { get }
    /// State the stage keeps from batch to batch besides its parameters and their optimizer
    /// state (checkpoints hold it too).
    var buffers: [Parameter] { get }
    /// Whether the losses `learn` returns are a loss of the rule (false: zeros from a stage
    /// that only computes, such as a first pass; progress and metrics leave them out).
    var reportsLoss: Bool { get }
}

extension TrainingStage {
    public var buffers: [Parameter] { [] }
    public var reportsLoss: Bool { true }
}

/// A stage's forward pass of one batch: what the next stage reads, and the stage's update
/// from this pass. The pipeline marks `outputs` ready before it enqueues `learn`, so the next
/// stage computes while this one learns.
public struct StagePass {
    /// What the next stage reads; for the last stage, the logits the batch's training
    /// accuracy is read from.
    public let outputs: [Tensor]
    /// Enqueues the stage's update; returns one loss share per row (their sum is the loss).
    public let learn: (Stream) throws -> Tensor
    /// A spiking block's mean spikes per unit per step over the batch's input stream ([1]),
    /// for the progress line; nil for other stages.
    public let spikeRate: Tensor?

    public init(
        outputs: [Tensor], spikeRate: Tensor? = nil, learn: @escaping (Stream) throws -> Tensor
    ) {
        self.outputs = outputs
        self.spikeRate = spikeRate
        self.learn = learn
    }
}

/// What every stage of one training batch shares: its samples, labels and random draws, the
/// step's settings, and the labels' one-hot rows per device (written once per device).
public final class BatchContext {
    /// The batch's samples, flattened, as the data set holds them (after augmentation).
    public let images: [Float]
    public let labels: [Int32]
    /// One sample's shape, [C, H, W], and the number of classes.
    public let inputShape: [Int]
    public let classes: Int
    public let learningRate: Float
    public let loss: LocalLoss
    public let dropout: DropoutMasks?
    /// Whether the target stream carries one row per class (the K-row shortcut, where exact).
    public let byClass: Bool
    /// The rule's own random draws for this batch (Forward-Forward's wrong labels), fixed by
    /// (seed, epoch, batch) so a resumed run draws what an uninterrupted one would.
    public var generator: SeededGenerator
    /// The epoch the batch trains in, from 0 (PEPITA's pre-mirroring epochs).
    public var epoch = 0
    /// Forward-Forward's wrong labels for the negative rows; nil: drawn from `generator`,
    /// uniformly among the other classes.
    public var wrongLabels: [Int32]?
    /// What one stage leaves for a later stage of the same batch on the same stream
    /// (PEPITA's dropout mask, drawn by the clean pass and reused by the modulated one; Error
    /// Forward-Propagation's first pass of a block, which its second pass reuses).
    public var shared: [String: Any] = [:]
    /// The whole batch's labels when this process trains on a share of it (data parallelism):
    /// the K-row shortcut's loss compares each of its rows with every sample of the batch.
    public var columnLabels: [Int32]?
    private var onehots: [ObjectIdentifier: Tensor] = [:]
    private var columnOnehots: [ObjectIdentifier: Tensor] = [:]

    public init(
        images: [Float], labels: [Int32], inputShape: [Int], classes: Int, learningRate: Float,
        loss: LocalLoss, dropout: DropoutMasks? = nil, byClass: Bool = false,
        generator: SeededGenerator = SeededGenerator(seed: 0)
    ) {
        self.images = images
        self.labels = labels
        self.inputShape = inputShape
        self.classes = classes
        self.learningRate = learningRate
        self.loss = loss
        self.dropout = dropout
        self.byClass = byClass
        self.generator = generator
    }

    public var size: Int { labels.count }

    /// The batch's samples as a tensor of `stream`'s device, [B, C, H, W].
    public func samples(on stream: Stream) throws -> Tensor {
        try stream.device.tensor(images, shape: [labels.count] + inputShape, on: stream)
    }

    /// onehot(labels) on `stream`'s device, written by the host where first asked for.
    public func onehot(on stream: Stream) throws -> Tensor {
        if let tensor = onehots[ObjectIdentifier(stream.device)] { return tensor }
        let tensor = try Self.onehot(labels, classes: classes, device: stream.device, on: stream)
        onehots[ObjectIdentifier(stream.device)] = tensor
        return tensor
    }

    /// onehot(`columnLabels`) on `stream`'s device; nil without them.
    public func columnOnehot(on stream: Stream) throws -> Tensor? {
        guard let columnLabels else { return nil }
        if let tensor = columnOnehots[ObjectIdentifier(stream.device)] { return tensor }
        let tensor = try Self.onehot(
            columnLabels, classes: classes, device: stream.device, on: stream)
        columnOnehots[ObjectIdentifier(stream.device)] = tensor
        return tensor
    }

    /// One row per label, 1 at the label's column, written to `device` on `stream`.
    public static func onehot(
        _ labels: [Int32], classes: Int, device: Device, on stream: Stream? = nil
    ) throws -> Tensor {
        var values = [Float](repeating: 0, count: labels.count * classes)
        for (row, label) in labels.enumerated() { values[row * classes + Int(label)] = 1 }
        return try device.tensor(values, shape: [labels.count, classes], on: stream)
    }
}
