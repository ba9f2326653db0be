/// A Signal Propagation network built from a `NetworkDescription`: the signal block, the
/// hidden blocks, the output layer, each on its device. The first learning block doubles as
/// the signal block's input part, as in the reference. It holds blocks and their forward,
/// learn and infer; when and on which stream they run is the `Pipeline`'s.
public final class Network {
    public let description: NetworkDescription
    /// What the description became for this input and these classes.
    public let plan: NetworkPlan
    /// One sample's shape, [C, H, W], and the number of classes.
    public var inputShape: [Int] { plan.inputShape }
    public var classes: Int { plan.classes }
    /// The device of each stage (each learning block, then the output layer).
    public let stageDevices: [Device]
    public let signal: SignalBlock
    public let hidden: [HiddenBlock]
    public let output: OutputLayer
    /// What the `Pipeline` runs for each batch, in order: the learning blocks, then the output
    /// layer.
    public let stages: [any TrainingStage]

    /// The first stage's device (the only one unless the network spans several).
    public var device: Device { stageDevices[0] }
    /// The devices the network uses, in stage order, each once.
    public var devices: [Device] {
        stageDevices.reduce(into: []) { list, device in
            if !list.contains(where: { $0 === device }) { list.append(device) }
        }
    }

    /// Blocks with a local loss, in order (the signal block first).
    public var blockCount: Int { 1 + hidden.count }

    public convenience init(
        _ description: NetworkDescription, inputShape: [Int], classes: Int, device: Device,
        optimizer: OptimizerSettings, seed: UInt64
    ) throws {
        try self.init(
            description, inputShape: inputShape, classes: classes, devices: [device],
            optimizer: optimizer, seed: seed)
    }

    /// The network on `devices`: its stages in contiguous groups of balanced work, one group
    /// per device (`placement`). The weights are the same whatever the devices: every weight
    /// is drawn from one generator in stage order (the signal block's input part, its context
    /// part, the hidden blocks, the output layer).
    public init(
        _ description: NetworkDescription, inputShape: [Int], classes: Int, devices: [Device],
        optimizer: OptimizerSettings, seed: UInt64
    ) throws {
        guard !devices.isEmpty else {
            throw SigPropError.configuration("a network needs at least one device")
        }
        let plan = try NetworkPlan(description, inputShape: inputShape, classes: classes)
        self.description = description
        self.plan = plan
        let stageDevices = plan.stageDevices(on: devices)
        self.stageDevices = stageDevices
        // Before any allocation: a model too large for the devices fails here with the
        // figures, not in an allocator part-way through.
        try MemoryEstimate(plan).checkParameters(on: stageDevices, optimizer: optimizer)
        var generator = SeededGenerator(seed: seed)
        func layer(_ index: Int) throws -> FeatureLayer {
            let stage = plan.stages[index]
            let (device, name) = (stageDevices[index], "block\(index)")
            switch stage.kind {
            case .dense(let inputs, let outputs):
                return try DenseLayer(
                    device: device, name: name, inputs: inputs, outputs: outputs,
                    norm: stage.norm, activation: description.activation, generator: &generator)
            case .conv(let inChannels, let outChannels, let kernel, let stride, let padding):
                return try ConvLayer(
                    device: device, name: name, inChannels: inChannels, outChannels: outChannels,
                    kernelSize: kernel, stride: stride, padding: padding, norm: stage.norm,
                    activation: description.activation, generator: &generator)
            case .output:
                preconditionFailure("the output layer is not a learning block")
            }
        }
        let first = plan.stages[0]
        let input = try layer(0)
        let context = try DenseLayer(
            device: stageDevices[0], name: "block0.context", inputs: classes,
            outputs: first.outputShape.reduce(1, *), bias: false, norm: .layer,
            activation: .relu, generator: &generator)
        signal = try SignalBlock(
            input: input, context: context, after: first.after,
            outputShape: [1] + first.outputShape, optimizer: optimizer,
            fixedContext: description.fixedContext)
        hidden = try (1..<plan.blockCount).map { index in
            try HiddenBlock(
                layer: try layer(index), after: plan.stages[index].after, optimizer: optimizer)
        }
        let last = plan.stages[plan.blockCount]
        output = try OutputLayer(
            layer: DenseLayer(
                device: stageDevices[plan.blockCount], name: "output",
                inputs: last.inputShape.reduce(1, *), outputs: classes, activation: .identity,
                generator: &generator),
            optimizer: optimizer)
        stages = [signal] + hidden + [output]
    }

    /// Every parameter, in a fixed order (checkpoints use the names).
    public var parameters: [Parameter] {
        signal.optimizer.parameters + hidden.flatMap(\.optimizer.parameters)
            + output.optimizer.parameters
    }

    public var optimizers: [Optimizer] {
        [signal.optimizer] + hidden.map(\.optimizer) + [output.optimizer]
    }

    /// One-hot rows for `labels` on `stream`'s device (the first stage's without a stream).
    public func onehot(_ labels: [Int32], on stream: Stream? = nil) throws -> Tensor {
        var values = [Float](repeating: 0, count: labels.count * classes)
        for (row, label) in labels.enumerated() { values[row * classes + Int(label)] = 1 }
        return try (stream?.device ?? device).tensor(
            values, shape: [labels.count, classes], on: stream)
    }

    /// Stages of a batch: one per learning block (the signal block first), then the output layer.
    public var stageCount: Int { blockCount + 1 }

    /// Stage `stage`'s name in traces and messages: `block1` (the signal block) ... `output`.
    public func stageName(_ stage: Int) -> String { plan.stageName(stage) }

    /// Whether every norm is per sample, so the target stream can run on K rows
    /// (docs/signal-propagation.md's K-row shortcut) with results identical up to rounding.
    /// (Dropout draws a mask per sample, so it rules the shortcut out too.)
    public var kRowShortcutIsExact: Bool { plan.kRowShortcutIsExact }

    /// The input stream through every block (the target stream is not used at inference);
    /// each block's output on its own device.
    public func features(images: [Float], count: Int) throws -> [Tensor] {
        let x = try device.tensor(images, shape: [count] + inputShape)
        return try throughHiddenBlocks(try signal.infer(x, on: nil))
    }

    /// Each class's target activations at every block: the context of onehot(k) through the blocks.
    public func classTargets() throws -> [Tensor] {
        let onehot = try self.onehot((0..<classes).map(Int32.init))
        return try throughHiddenBlocks(try signal.inferTarget(onehot, on: nil))
    }

    /// The output layer's logits for the last block's output `h`.
    public func logits(_ h: Tensor) throws -> Tensor {
        try output.logits(try stageDevices[stageCount - 1].transfer(h), on: nil)
    }

    /// `first` (the signal block's output) and what each hidden block makes of its predecessor's.
    func throughHiddenBlocks(_ first: Tensor) throws -> [Tensor] {
        var outputs = [first]
        for (index, block) in hidden.enumerated() {
            outputs.append(
                try block.infer(
                    try stageDevices[index + 1].transfer(outputs[outputs.count - 1]), on: nil))
        }
        return outputs
    }
}
