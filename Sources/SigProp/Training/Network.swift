/// The architectures `train` builds. Stored in checkpoints, so a resumed run rebuilds the same net.
public struct ModelConfig: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable { case mlp, cnn }

    public var kind: Kind = .mlp
    /// One sample's shape, [C, H, W].
    public var inputShape: [Int] = [1, 28, 28]
    public var classes = 10
    /// `mlp`: dense blocks after the signal block's input part (3 blocks in all by default).
    public var hiddenLayers = 3
    /// `mlp`: features per dense block.
    public var width = 1024
    public var activation: Activation = .leakyRelu
    /// Norm of the dense blocks (layer or batch or none) and of the conv blocks (instance or batch or none).
    public var denseNorm: NormKind = .layer
    public var convNorm: NormKind = .instance
    /// Dropout probability after every learning block but the last (0 = off).
    public var dropout: Float = 0
    /// Keep the signal's context projection fixed at its random init.
    public var fixedContext = false

    public init() {}
}

/// A Signal Propagation network: the signal block, hidden blocks, the output layer.
/// The first hidden block doubles as the signal block's input part, as in the reference.
public final class Network {
    public let config: ModelConfig
    public let device: Device
    public let signal: SignalBlock
    public let hidden: [HiddenBlock]
    public let output: OutputLayer

    /// Blocks with a local loss, in order (the signal block first).
    public var blockCount: Int { 1 + hidden.count }

    public init(config: ModelConfig, device: Device, optimizer: OptimizerSettings, seed: UInt64) throws {
        guard config.inputShape.count == 3, config.inputShape.allSatisfy({ $0 >= 1 }) else {
            throw SigPropError.configuration("the input shape must be [channels, height, width], got \(config.inputShape)")
        }
        guard config.classes >= 2 else { throw SigPropError.configuration("a classifier needs at least 2 classes, got \(config.classes)") }
        guard config.dropout >= 0, config.dropout < 1 else { throw SigPropError.configuration("--dropout must be in 0..<1, got \(config.dropout)") }
        func dropout(last: Bool) -> [FixedStep] { config.dropout > 0 && !last ? [.dropout(config.dropout)] : [] }
        self.config = config
        self.device = device
        var generator = SeededGenerator(seed: seed)
        let act = config.activation
        let classes = config.classes
        var shape = [1] + config.inputShape

        switch config.kind {
        case .mlp:
            guard config.hiddenLayers >= 1, config.width >= 1 else {
                throw SigPropError.configuration("mlp needs --hidden-layers >= 1 and --width >= 1 (got \(config.hiddenLayers), \(config.width))")
            }
            let features = config.inputShape.reduce(1, *)
            let first = try DenseLayer(device: device, name: "block0", inputs: features, outputs: config.width, norm: config.denseNorm,
                                       activation: act, generator: &generator)
            let context = try DenseLayer(device: device, name: "block0.context", inputs: classes, outputs: config.width, bias: false,
                                         norm: .layer, activation: .relu, generator: &generator)
            signal = try SignalBlock(input: first, context: context, after: dropout(last: config.hiddenLayers == 1), outputShape: [1, config.width],
                                     optimizer: optimizer, fixedContext: config.fixedContext)
            hidden = try (1..<config.hiddenLayers).map { index in
                try HiddenBlock(layer: DenseLayer(device: device, name: "block\(index)", inputs: config.width, outputs: config.width,
                                                  norm: config.denseNorm, activation: act, generator: &generator),
                                after: dropout(last: index == config.hiddenLayers - 1), optimizer: optimizer)
            }
            shape = [1, config.width]

        case .cnn:
            // conv 32, conv 64, pool, conv 128, pool, dense 1024: a small VGG-like net.
            let channels = config.inputShape[0]
            let first = try ConvLayer(device: device, name: "block0", inChannels: channels, outChannels: 32, norm: config.convNorm,
                                      activation: act, generator: &generator)
            let firstShape = try first.outputShape(for: shape)
            let context = try DenseLayer(device: device, name: "block0.context", inputs: classes, outputs: firstShape.dropFirst().reduce(1, *),
                                         bias: false, norm: .layer, activation: .relu, generator: &generator)
            signal = try SignalBlock(input: first, context: context, after: dropout(last: false), outputShape: firstShape, optimizer: optimizer,
                                     fixedContext: config.fixedContext)
            shape = firstShape
            var blocks: [HiddenBlock] = []
            for (index, (out, pool)) in [(64, true), (128, true)].enumerated() {
                let layer = try ConvLayer(device: device, name: "block\(index + 1)", inChannels: shape[1], outChannels: out, norm: config.convNorm,
                                          activation: act, generator: &generator)
                let after: [FixedStep] = (pool ? [.pool(.max)] : []) + dropout(last: false)
                shape = try after.reduce(try layer.outputShape(for: shape)) { try $1.outputShape(for: $0) }
                blocks.append(try HiddenBlock(layer: layer, after: after, optimizer: optimizer))
            }
            let dense = try DenseLayer(device: device, name: "block3", inputs: shape.dropFirst().reduce(1, *), outputs: 1024, norm: config.denseNorm,
                                       activation: act, generator: &generator)
            blocks[blocks.count - 1] = try HiddenBlock(layer: blocks[blocks.count - 1].layer, after: blocks[blocks.count - 1].after + [.flatten],
                                                       optimizer: optimizer)
            blocks.append(try HiddenBlock(layer: dense, after: [], optimizer: optimizer))
            hidden = blocks
            shape = [1, 1024]
        }
        output = try OutputLayer(
            layer: DenseLayer(device: device, name: "output", inputs: shape.dropFirst().reduce(1, *), outputs: classes, activation: .identity,
                              generator: &generator),
            optimizer: optimizer)
    }

    /// Every parameter, in a fixed order (checkpoints use the names).
    public var parameters: [Parameter] {
        signal.optimizer.parameters + hidden.flatMap(\.optimizer.parameters) + output.optimizer.parameters
    }

    public var optimizers: [Optimizer] { [signal.optimizer] + hidden.map(\.optimizer) + [output.optimizer] }

    /// One-hot rows for `labels` on the device.
    public func onehot(_ labels: [Int32], on stream: Stream? = nil) throws -> Tensor {
        var values = [Float](repeating: 0, count: labels.count * config.classes)
        for (row, label) in labels.enumerated() { values[row * config.classes + Int(label)] = 1 }
        return try device.tensor(values, shape: [labels.count, config.classes], on: stream)
    }

    /// What one training batch leaves on the device: per-block row losses (signal block
    /// first, output layer last) and the output layer's logits, read back when convenient,
    /// and one event per stage that completes when the stage (its update included) is done.
    public struct BatchResult {
        public let rowLosses: [Tensor]
        public let logits: Tensor
        public let done: [Event]
    }

    /// Stages of a batch: one per learning block (the signal block first), then the output layer.
    public var stageCount: Int { blockCount + 1 }

    /// Stage `stage`'s name in traces and messages: `block1` (the signal block) ... `output`.
    public func stageName(_ stage: Int) -> String { stage < blockCount ? "block\(stage + 1)" : "output" }

    /// Whether every norm is per sample, so the target stream can run on K rows (SIGPROP.md's
    /// K-row shortcut) with results identical up to rounding.
    /// (Dropout draws a mask per sample, so it rules the shortcut out too.)
    public var kRowShortcutIsExact: Bool { config.denseNorm.isPerSample && config.convNorm.isPerSample && config.dropout == 0 }

    /// A span of one stage's work on its stream, for traces: (stage, "forward" / "update" /
    /// "train", start, end).
    public typealias StageSpan = (_ stage: Int, _ part: String, _ start: Event, _ end: Event) -> Void

    /// Enqueues one training batch without waiting for it. Stage `l` runs on `streams[l]`
    /// (`stageCount` streams; nil: every stage on the default stream, which is the
    /// reference's one-block-after-another order). A stage waits for its predecessor's
    /// outputs only, not for its update, so with a stream per stage block l learns while
    /// block l+1 computes; each block's outputs use its weights before its update, and its
    /// update comes before its next forward (its stream is in order). With `kRowShortcut`
    /// (ignored where it is not exact) the target stream carries one row per class.
    public func trainBatch(images: [Float], labels: [Int32], loss: LocalLoss, learningRate: Float, kRowShortcut: Bool = true,
                           dropout: DropoutMasks? = nil, streams: [Stream]? = nil, trace: StageSpan? = nil) throws -> BatchResult {
        let streams = streams ?? Array(repeating: device.defaultStream, count: stageCount)
        guard streams.count == stageCount else {
            throw SigPropError.configuration("trainBatch needs \(stageCount) streams (one per block and one for the output layer), got \(streams.count)")
        }
        let first = streams[0]
        let x = try device.tensor(images, shape: [labels.count] + config.inputShape, on: first)
        let onehot = try self.onehot(labels, on: first)
        let byClass = kRowShortcut && kRowShortcutIsExact
        let context = byClass ? try self.onehot((0..<config.classes).map(Int32.init), on: first) : onehot
        let expand = byClass ? onehot : nil

        var losses: [Tensor] = [], done: [Event] = []
        var ready: Event?
        /// Waits for the previous stage's outputs when on another stream, runs `forward`,
        /// marks its outputs ready, then runs `learn`.
        func stage(_ index: Int, forward: (Stream) throws -> BlockForward, learn: (BlockForward, Stream) throws -> LocalLossOutput) throws -> BlockForward {
            let stream = streams[index]
            if let ready, index > 0, stream.queue !== streams[index - 1].queue { try stream.wait(for: ready) }
            let start = trace == nil ? nil : try stream.record()
            let pass = try forward(stream)
            let outputs = try stream.record()
            ready = outputs
            losses.append(try learn(pass, stream).rowLosses)
            let end = try stream.record()
            done.append(end)
            if let trace, let start {
                trace(index, "forward", start, outputs)
                trace(index, "update", outputs, end)
            }
            return pass
        }
        var pass = try stage(0, forward: { try signal.forward(x: x, context: context, labels: expand, dropout: dropout, on: $0) },
                             learn: { try signal.learn($0, loss: loss, learningRate: learningRate, on: $1) })
        for (index, block) in hidden.enumerated() {
            let previous = pass
            pass = try stage(index + 1, forward: { try block.forward(h: previous.h, t: previous.t, labels: expand, dropout: dropout, on: $0) },
                             learn: { try block.learn($0, loss: loss, learningRate: learningRate, on: $1) })
        }
        let last = streams[stageCount - 1]
        if let ready, last.queue !== streams[stageCount - 2].queue { try last.wait(for: ready) }
        let start = trace == nil ? nil : try last.record()
        let out = try output.train(h: pass.h, onehot: onehot, learningRate: learningRate, on: last)
        let end = try last.record()
        if let trace, let start { trace(stageCount - 1, "train", start, end) }
        return BatchResult(rowLosses: losses + [out.rowLosses], logits: out.logits, done: done + [end])
    }

    /// The input stream through every block (the target stream is not used at inference).
    public func features(images: [Float], count: Int, on stream: Stream? = nil) throws -> [Tensor] {
        let x = try device.tensor(images, shape: [count] + config.inputShape, on: stream)
        return try throughHiddenBlocks(try signal.infer(x, on: stream), on: stream)
    }

    /// Each class's target activations at every block: the context of onehot(k) through the blocks.
    public func classTargets(on stream: Stream? = nil) throws -> [Tensor] {
        let onehot = try self.onehot((0..<config.classes).map(Int32.init), on: stream)
        return try throughHiddenBlocks(try signal.inferTarget(onehot, on: stream), on: stream)
    }

    /// `first` (the signal block's output) and what each hidden block makes of its predecessor's.
    func throughHiddenBlocks(_ first: Tensor, on stream: Stream?) throws -> [Tensor] {
        var outputs = [first]
        for block in hidden { outputs.append(try block.infer(outputs[outputs.count - 1], on: stream)) }
        return outputs
    }
}
