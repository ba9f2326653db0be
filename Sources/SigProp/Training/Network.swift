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
    /// first, output layer last) and the output layer's logits, read back when convenient.
    public struct BatchResult {
        public let rowLosses: [Tensor]
        public let logits: Tensor
    }

    /// Whether every norm is per sample, so the target stream can run on K rows (SIGPROP.md's
    /// K-row shortcut) with results identical up to rounding.
    /// (Dropout draws a mask per sample, so it rules the shortcut out too.)
    public var kRowShortcutIsExact: Bool { config.denseNorm.isPerSample && config.convNorm.isPerSample && config.dropout == 0 }

    /// Trains on one batch, one block after another (the reference's order): each block's
    /// outputs use its weights before its update. With `kRowShortcut` (ignored where it is
    /// not exact) the target stream carries one row per class instead of one per sample.
    public func trainBatch(images: [Float], labels: [Int32], loss: LocalLoss, learningRate: Float, kRowShortcut: Bool = true,
                           dropout: DropoutMasks? = nil, on stream: Stream? = nil) throws -> BatchResult {
        let x = try device.tensor(images, shape: [labels.count] + config.inputShape, on: stream)
        let onehot = try self.onehot(labels, on: stream)
        let byClass = kRowShortcut && kRowShortcutIsExact
        let context = byClass ? try self.onehot((0..<config.classes).map(Int32.init), on: stream) : onehot
        let expand = byClass ? onehot : nil
        var step = try signal.train(x: x, context: context, labels: expand, loss: loss, learningRate: learningRate, dropout: dropout, on: stream)
        var losses = [step.rowLosses]
        for block in hidden {
            step = try block.train(h: step.h, t: step.t, labels: expand, loss: loss, learningRate: learningRate, dropout: dropout, on: stream)
            losses.append(step.rowLosses)
        }
        let out = try output.train(h: step.h, onehot: onehot, learningRate: learningRate, on: stream)
        return BatchResult(rowLosses: losses + [out.rowLosses], logits: out.logits)
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
