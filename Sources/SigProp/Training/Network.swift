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
    /// Norm of the dense blocks (layer or batch or none) and of the conv blocks (instance or batch
    /// or none).
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
    /// The device of each stage (each learning block, then the output layer).
    public let stageDevices: [Device]
    public let signal: SignalBlock
    public let hidden: [HiddenBlock]
    public let output: OutputLayer

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

    /// The `cnn`'s conv blocks (output channels, 2x2 max pool after) and its dense block.
    static let cnnConvs: [(channels: Int, pool: Bool)] = [(32, false), (64, true), (128, true)]
    static let cnnDense = 1024

    public convenience init(
        config: ModelConfig, device: Device, optimizer: OptimizerSettings, seed: UInt64
    ) throws {
        try self.init(config: config, devices: [device], optimizer: optimizer, seed: seed)
    }

    /// The network on `devices`: its stages in contiguous groups of balanced work, one group
    /// per device (`placement`). The weights are the same whatever the devices.
    public init(config: ModelConfig, devices: [Device], optimizer: OptimizerSettings, seed: UInt64)
        throws
    {
        guard config.inputShape.count == 3, config.inputShape.allSatisfy({ $0 >= 1 }) else {
            throw SigPropError.configuration(
                "the input shape must be [channels, height, width], got \(config.inputShape)")
        }
        guard config.classes >= 2 else {
            throw SigPropError.configuration(
                "a classifier needs at least 2 classes, got \(config.classes)")
        }
        guard config.dropout >= 0, config.dropout < 1 else {
            throw SigPropError.configuration("--dropout must be in 0..<1, got \(config.dropout)")
        }
        func dropout(last: Bool) -> [FixedStep] {
            config.dropout > 0 && !last ? [.dropout(config.dropout)] : []
        }
        guard !devices.isEmpty else {
            throw SigPropError.configuration("a network needs at least one device")
        }
        self.config = config
        let placement = Self.placement(costs: Self.stageCosts(config), groups: devices.count)
        let stageDevices = placement.map { devices[$0] }
        self.stageDevices = stageDevices
        // Before any allocation: a model too large for the devices fails here with the
        // figures, not in an allocator part-way through.
        try MemoryEstimate(config).checkParameters(on: stageDevices, optimizer: optimizer)
        var device = stageDevices[0]
        var generator = SeededGenerator(seed: seed)
        let act = config.activation
        let classes = config.classes
        var shape = [1] + config.inputShape

        switch config.kind {
        case .mlp:
            guard config.hiddenLayers >= 1, config.width >= 1 else {
                throw SigPropError.configuration(
                    "mlp needs --hidden-layers >= 1 and --width >= 1 (got \(config.hiddenLayers), "
                        + "\(config.width))"
                )
            }
            let features = config.inputShape.reduce(1, *)
            let first = try DenseLayer(
                device: device, name: "block0", inputs: features, outputs: config.width,
                norm: config.denseNorm,
                activation: act, generator: &generator)
            let context = try DenseLayer(
                device: device, name: "block0.context", inputs: classes, outputs: config.width,
                bias: false,
                norm: .layer, activation: .relu, generator: &generator)
            signal = try SignalBlock(
                input: first, context: context, after: dropout(last: config.hiddenLayers == 1),
                outputShape: [1, config.width],
                optimizer: optimizer, fixedContext: config.fixedContext)
            hidden = try (1..<config.hiddenLayers).map { index in
                try HiddenBlock(
                    layer: DenseLayer(
                        device: stageDevices[index], name: "block\(index)", inputs: config.width,
                        outputs: config.width,
                        norm: config.denseNorm, activation: act, generator: &generator),
                    after: dropout(last: index == config.hiddenLayers - 1), optimizer: optimizer)
            }
            shape = [1, config.width]

        case .cnn:
            // conv 32, conv 64, pool, conv 128, pool, dense 1024: a small VGG-like net.
            let channels = config.inputShape[0]
            let first = try ConvLayer(
                device: device, name: "block0", inChannels: channels,
                outChannels: Self.cnnConvs[0].channels, norm: config.convNorm,
                activation: act, generator: &generator)
            let firstShape = try first.outputShape(for: shape)
            let context = try DenseLayer(
                device: device, name: "block0.context", inputs: classes,
                outputs: firstShape.dropFirst().reduce(1, *),
                bias: false, norm: .layer, activation: .relu, generator: &generator)
            signal = try SignalBlock(
                input: first, context: context, after: dropout(last: false),
                outputShape: firstShape, optimizer: optimizer,
                fixedContext: config.fixedContext)
            shape = firstShape
            var blocks: [HiddenBlock] = []
            for (index, (out, pool)) in Self.cnnConvs.dropFirst().enumerated() {
                let layer = try ConvLayer(
                    device: stageDevices[index + 1], name: "block\(index + 1)",
                    inChannels: shape[1], outChannels: out, norm: config.convNorm,
                    activation: act, generator: &generator)
                let after: [FixedStep] = (pool ? [.pool(.max)] : []) + dropout(last: false)
                shape = try after.reduce(try layer.outputShape(for: shape)) {
                    try $1.outputShape(for: $0)
                }
                blocks.append(try HiddenBlock(layer: layer, after: after, optimizer: optimizer))
            }
            let dense = try DenseLayer(
                device: stageDevices[Self.cnnConvs.count], name: "block\(Self.cnnConvs.count)",
                inputs: shape.dropFirst().reduce(1, *),
                outputs: Self.cnnDense, norm: config.denseNorm,
                activation: act, generator: &generator)
            blocks[blocks.count - 1] = try HiddenBlock(
                layer: blocks[blocks.count - 1].layer,
                after: blocks[blocks.count - 1].after + [.flatten],
                optimizer: optimizer)
            blocks.append(try HiddenBlock(layer: dense, after: [], optimizer: optimizer))
            hidden = blocks
            shape = [1, Self.cnnDense]
        }
        device = stageDevices[stageDevices.count - 1]
        output = try OutputLayer(
            layer: DenseLayer(
                device: device, name: "output", inputs: shape.dropFirst().reduce(1, *),
                outputs: classes, activation: .identity,
                generator: &generator),
            optimizer: optimizer)
    }

    /// Multiply-adds per sample of each stage's forward (its update costs about twice as
    /// much, in proportion): the weights of the placement.
    static func stageCosts(_ config: ModelConfig) -> [Double] {
        let classes = Double(config.classes)
        switch config.kind {
        case .mlp:
            let width = Double(config.width)
            let features = Double(config.inputShape.reduce(1, *))
            return [features * width + classes * width]
                + Array(repeating: width * width, count: max(config.hiddenLayers - 1, 0)) + [
                    width * classes
                ]
        case .cnn:
            var (channels, height, width) = (
                config.inputShape[0], config.inputShape[1], config.inputShape[2]
            )
            var costs: [Double] = []
            for conv in cnnConvs {
                costs.append(Double(conv.channels * channels * 9 * height * width))
                channels = conv.channels
                if conv.pool { (height, width) = (height / 2, width / 2) }
            }
            costs[0] += classes * Double(channels * height * width)
            return costs + [
                Double(channels * height * width * cnnDense), Double(cnnDense) * classes,
            ]
        }
    }

    /// Stage -> group (device) index: contiguous groups, in order, that make the largest
    /// group's cost as small as it can be (every device gets a stage while there are enough).
    static func placement(costs: [Double], groups: Int) -> [Int] {
        let n = costs.count
        let k = max(1, min(groups, n))
        let prefix = costs.reduce(into: [0.0]) { $0.append($0.last! + $1) }
        // best[j][i]: the least largest-group cost of stages 0..<i in j + 1 groups; cut[j][i] where
        // the last group starts.
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: n + 1), count: k)
        var cut = [[Int]](repeating: [Int](repeating: 0, count: n + 1), count: k)
        for i in 1...n { best[0][i] = prefix[i] }
        for j in stride(from: 1, to: k, by: 1) {
            for i in (j + 1)...n {
                for start in j..<i {
                    let value = max(best[j - 1][start], prefix[i] - prefix[start])
                    if value < best[j][i] {
                        best[j][i] = value
                        cut[j][i] = start
                    }
                }
            }
        }
        var assignment = [Int](repeating: 0, count: n)
        var end = n
        for j in stride(from: k - 1, through: 0, by: -1) {
            let start = j == 0 ? 0 : cut[j][end]
            for stage in start..<end { assignment[stage] = j }
            end = start
        }
        return assignment
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
        var values = [Float](repeating: 0, count: labels.count * config.classes)
        for (row, label) in labels.enumerated() { values[row * config.classes + Int(label)] = 1 }
        return try (stream?.device ?? device).tensor(
            values, shape: [labels.count, config.classes], on: stream)
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
    public func stageName(_ stage: Int) -> String {
        stage < blockCount ? "block\(stage + 1)" : "output"
    }

    /// Whether every norm is per sample, so the target stream can run on K rows
    /// (docs/signal-propagation.md's K-row shortcut) with results identical up to rounding.
    /// (Dropout draws a mask per sample, so it rules the shortcut out too.)
    public var kRowShortcutIsExact: Bool {
        config.denseNorm.isPerSample && config.convNorm.isPerSample && config.dropout == 0
    }

    /// A span of one stage's work on its stream, for traces: (stage, "forward" / "update" /
    /// "train", start, end).
    public typealias StageSpan = (_ stage: Int, _ part: String, _ start: Event, _ end: Event) ->
        Void

    /// Enqueues one training batch without waiting for it. Stage `l` runs on `streams[l]`
    /// (`stageCount` streams; nil: every stage on the default stream, which is the
    /// reference's one-block-after-another order). A stage waits for its predecessor's
    /// outputs only, not for its update, so with a stream per stage block l learns while
    /// block l+1 computes; each block's outputs use its weights before its update, and its
    /// update comes before its next forward (its stream is in order). With `kRowShortcut`
    /// (ignored where it is not exact) the target stream carries one row per class.
    public func trainBatch(
        images: [Float], labels: [Int32], loss: LocalLoss, learningRate: Float,
        kRowShortcut: Bool = true,
        dropout: DropoutMasks? = nil, streams: [Stream]? = nil, bridge: DeviceBridge? = nil,
        trace: StageSpan? = nil
    ) throws -> BatchResult {
        let streams = streams ?? stageDevices.map(\.defaultStream)
        guard streams.count == stageCount,
            zip(streams, stageDevices).allSatisfy({ $0.device === $1 })
        else {
            throw SigPropError.configuration(
                "trainBatch needs \(stageCount) streams, one per stage on that stage's device "
                    + "(one per block and one for the output layer)"
            )
        }
        let first = streams[0]
        let x = try device.tensor(images, shape: [labels.count] + config.inputShape, on: first)
        let byClass = kRowShortcut && kRowShortcutIsExact
        let context = try self.onehot(
            byClass ? (0..<config.classes).map(Int32.init) : labels, on: first)
        /// The batch's one-hot labels on each device, written by the host where first needed.
        var onehots: [ObjectIdentifier: Tensor] = [:]
        func onehot(on stream: Stream) throws -> Tensor {
            if let tensor = onehots[ObjectIdentifier(stream.device)] { return tensor }
            let tensor = try self.onehot(labels, on: stream)
            onehots[ObjectIdentifier(stream.device)] = tensor
            return tensor
        }

        var losses: [Tensor] = []
        var done: [Event] = []
        var ready: Event?
        /// Orders stage `index` after its predecessor's outputs: by an event on the same device;
        /// across devices the `bridge` does it (or, without one, the host waits here and
        /// `arrive` copies through the host).
        func enter(_ index: Int) throws -> Stream {
            let stream = streams[index]
            guard index > 0, let ready else { return stream }
            if stream.device !== streams[index - 1].device {
                if bridge == nil { try ready.wait() }
            } else if stream.queue !== streams[index - 1].queue {
                try stream.wait(for: ready)
            }
            return stream
        }
        /// The previous stage's output as a tensor of `stream`'s device.
        func arrive(_ tensor: Tensor, on stream: Stream) throws -> Tensor {
            guard tensor.device !== stream.device else { return tensor }
            if let bridge, let ready { return try bridge.copy(tensor, after: ready, to: stream) }
            return try stream.device.transfer(tensor, on: stream)
        }
        /// Brings the inputs in, runs `forward`, marks its outputs ready, then runs `learn`.
        func stage<Inputs>(
            _ index: Int, inputs: (Stream) throws -> Inputs,
            forward: (Inputs, Stream) throws -> BlockForward,
            learn: (BlockForward, Stream) throws -> LocalLossOutput
        ) throws -> BlockForward {
            let stream = try enter(index)
            let arrived = try inputs(stream)
            let start = trace == nil ? nil : try stream.record()
            let pass = try forward(arrived, stream)
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
        var pass = try stage(
            0, inputs: { _ in x },
            forward: { x, stream in
                try signal.forward(
                    x: x, context: context, labels: byClass ? try onehot(on: stream) : nil,
                    dropout: dropout, on: stream)
            },
            learn: { try signal.learn($0, loss: loss, learningRate: learningRate, on: $1) })
        for (index, block) in hidden.enumerated() {
            let previous = pass
            pass = try stage(
                index + 1,
                inputs: { stream in
                    (try arrive(previous.h, on: stream), try arrive(previous.t, on: stream))
                },
                forward: { inputs, stream in
                    try block.forward(
                        h: inputs.0, t: inputs.1, labels: byClass ? try onehot(on: stream) : nil,
                        dropout: dropout, on: stream)
                },
                learn: { try block.learn($0, loss: loss, learningRate: learningRate, on: $1) })
        }
        let last = try enter(stageCount - 1)
        let h = try arrive(pass.h, on: last)
        let start = trace == nil ? nil : try last.record()
        let out = try output.train(
            h: h, onehot: try onehot(on: last), learningRate: learningRate, on: last)
        let end = try last.record()
        if let trace, let start { trace(stageCount - 1, "train", start, end) }
        return BatchResult(
            rowLosses: losses + [out.rowLosses], logits: out.logits, done: done + [end])
    }

    /// The input stream through every block (the target stream is not used at inference);
    /// each block's output on its own device.
    public func features(images: [Float], count: Int) throws -> [Tensor] {
        let x = try device.tensor(images, shape: [count] + config.inputShape)
        return try throughHiddenBlocks(try signal.infer(x, on: nil))
    }

    /// Each class's target activations at every block: the context of onehot(k) through the blocks.
    public func classTargets() throws -> [Tensor] {
        let onehot = try self.onehot((0..<config.classes).map(Int32.init))
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
