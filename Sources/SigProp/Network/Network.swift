import Foundation

/// A network built from a `NetworkDescription` for a learning rule, each stage on its device.
/// Under Signal Propagation: the signal block, the hidden blocks, the output layer (the first
/// learning block doubles as the signal block's input part, as in the reference); Error
/// Forward-Propagation runs the same blocks twice per batch. Under Forward-Forward: a layer
/// per dense layer of the description and the linear classifier.
/// It holds blocks and their forward, learn and infer; when and on which stream they run is
/// the `Pipeline`'s.
public final class Network {
    public let description: NetworkDescription
    /// What the description became for this input and these classes.
    public let plan: NetworkPlan
    /// One sample's shape, [C, H, W], and the number of classes.
    public var inputShape: [Int] { plan.inputShape }
    public var classes: Int { plan.classes }
    /// The device of each stage (each learning block, then the output layer).
    public let stageDevices: [Device]
    public let rule: LearningRule
    /// Signal Propagation's blocks, which Error Forward-Propagation trains too (nil and empty
    /// under other rules).
    public let signal: SignalBlock?
    public let hidden: [HiddenBlock]
    public let output: OutputLayer?
    /// Forward-Forward's layers and linear classifier (empty and nil under other rules).
    public let forwardForward: [ForwardForwardBlock]
    public let classifier: ForwardForwardClassifier?
    /// PEPITA's layers, each run by a clean and a modulated stage (empty under other rules).
    public let pepita: [PEPITALayer]
    /// The blocks of a spiking network (nil for any other).
    public let spiking: SpikingBlocks?
    /// What the `Pipeline` runs for each batch, in order: the learning blocks, then the output
    /// layer (under PEPITA and Error Forward-Propagation, twice: the first pass, the second).
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
    public var blockCount: Int { plan.blockCount }

    public convenience init(
        _ description: NetworkDescription, inputShape: [Int], classes: Int, device: Device,
        optimizer: OptimizerSettings, seed: UInt64, rule: LearningRule = .signalPropagation
    ) throws {
        try self.init(
            description, inputShape: inputShape, classes: classes, devices: [device],
            optimizer: optimizer, seed: seed, rule: rule)
    }

    /// The network on `devices`: its stages in contiguous groups of balanced work, one group
    /// per device (`placement`), or each stage on its device of `stageDevices` (one per stage
    /// of the plan: its blocks, then the output layer). The weights are the same whatever the
    /// devices: every weight is drawn from one generator in stage order (under Signal
    /// Propagation the signal block's input part, its context part, the hidden blocks, the
    /// output layer).
    public init(
        _ description: NetworkDescription, inputShape: [Int], classes: Int, devices: [Device],
        stageDevices placed: [Device]? = nil, optimizer: OptimizerSettings, seed: UInt64,
        rule: LearningRule = .signalPropagation
    ) throws {
        guard !devices.isEmpty else {
            throw SigPropError.configuration("a network needs at least one device")
        }
        let plan = try NetworkPlan(description, inputShape: inputShape, classes: classes)
        self.description = description
        self.plan = plan
        let stageDevices = placed ?? plan.stageDevices(on: devices)
        guard stageDevices.count == plan.stages.count else {
            throw SigPropError.configuration(
                "the network has \(plan.stages.count) stages, but \(stageDevices.count) devices "
                    + "were given for them")
        }
        self.stageDevices = stageDevices
        // Before any allocation: a model too large for the devices fails here with the
        // figures, not in an allocator part-way through.
        try MemoryEstimate(plan).checkParameters(on: stageDevices, optimizer: optimizer)
        self.rule = rule
        var generator = SeededGenerator(seed: seed)
        try Self.check(plan, for: rule.name)
        if plan.isSpiking {
            let spanned = Set(stageDevices.map(ObjectIdentifier.init)).count
            if let chunk = plan.timeChunk, spanned > 1 {
                throw SigPropError.configuration(
                    "--time-chunk \(chunk) runs every block's chunk of steps in turn on one "
                        + "device, and this network spans \(spanned) devices: train on one "
                        + "device, or drop --time-chunk")
            }
            let built = try SpikingBlocks(
                plan, devices: stageDevices, optimizer: optimizer, generator: &generator)
            (signal, hidden, output, pepita, forwardForward, classifier) = (
                nil, [], nil, [], [], nil
            )
            spiking = built
            stages = built.stages
            return
        }
        spiking = nil
        if rule.name == .ff {
            let built = try Self.forwardForward(
                plan, devices: stageDevices, optimizer: optimizer, settings: rule.forwardForward,
                generator: &generator)
            (signal, hidden, output, pepita) = (nil, [], nil, [])
            (forwardForward, classifier) = built
            stages = built.layers + [built.classifier]
            return
        }
        (forwardForward, classifier) = ([], nil)
        if rule.name == .pepita {
            let built = try Self.pepita(
                plan, devices: stageDevices, optimizer: optimizer,
                feedbackScale: rule.feedbackScaleInForce, mirroring: rule.mirroring,
                generator: &generator)
            (signal, hidden, output) = (nil, [], nil)
            pepita = built.layers
            stages = built.stages
            return
        }
        pepita = []
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
        let signal = try SignalBlock(
            input: input, context: context, after: first.after,
            outputShape: [1] + first.outputShape, optimizer: optimizer,
            fixedContext: description.fixedContext)
        let hidden = try (1..<plan.blockCount).map { index in
            try HiddenBlock(
                layer: try layer(index), after: plan.stages[index].after, optimizer: optimizer)
        }
        let last = plan.stages[plan.blockCount]
        let output = try OutputLayer(
            layer: DenseLayer(
                device: stageDevices[plan.blockCount], name: "output",
                inputs: last.inputShape.reduce(1, *), outputs: classes, activation: .identity,
                generator: &generator),
            optimizer: optimizer)
        (self.signal, self.hidden, self.output) = (signal, hidden, output)
        let blocks: [any TrainingStage] = [signal] + hidden + [output]
        guard rule.name == .efp else {
            stages = blocks
            return
        }
        // The output layer learns once per batch, from the second pass (in the reference the
        // training loop's cross entropy reads the loop-back model's final output only).
        switch rule.errorFirstPassInForce {
        case .learn:
            stages =
                [signal] + hidden + [ErrorForwardPredictStage(.output(output), keepsPass: false)]
                + [ErrorForwardSignalStage(signal, reusesFirstPass: false)]
                + hidden.map { ErrorForwardHiddenStage($0, reusesFirstPass: false) } + [output]
        case .predict:
            let firstPass: [ErrorForwardPredictStage.Block] =
                [.signal(signal)] + hidden.map { .hidden($0) } + [.output(output)]
            stages =
                firstPass.map { ErrorForwardPredictStage($0, keepsPass: true) }
                + [ErrorForwardSignalStage(signal, reusesFirstPass: true)]
                + hidden.map { ErrorForwardHiddenStage($0, reusesFirstPass: true) }
                + [ErrorForwardOutputStage(output)]
        }
    }

    /// Forward-Forward's layers, one per dense layer of `plan`, and its classifier on the
    /// readout layers (every layer but the first; the only layer of a one-layer network).
    private static func forwardForward(
        _ plan: NetworkPlan, devices: [Device], optimizer: OptimizerSettings,
        settings: ForwardForwardSettings, generator: inout SeededGenerator
    ) throws -> (layers: [ForwardForwardBlock], classifier: ForwardForwardClassifier) {
        let features = plan.inputShape.reduce(1, *)
        let widths = try forwardForwardWidths(plan)
        let readout = widths.count == 1 ? [0] : Array(1..<widths.count)
        let layers = try widths.enumerated().map { index, width in
            try ForwardForwardBlock(
                device: devices[index], name: "layer\(index)",
                inputs: index == 0 ? features : widths[index - 1], outputs: width,
                settings: settings, optimizer: optimizer, embedsLabels: index == 0,
                isReadout: readout.contains(index), generator: &generator)
        }
        let classifier = try ForwardForwardClassifier(
            device: devices[widths.count], widths: readout.map { widths[$0] },
            classes: plan.classes, optimizer: optimizer, settings: settings,
            generator: &generator)
        return (layers, classifier)
    }

    /// PEPITA's layers, one per dense layer of `plan` and the output layer, and its stages:
    /// every layer's clean pass, then every layer's modulated pass (which learns). With
    /// `mirroring`, each layer gets its factor of F, normal with the authors' deviation, so
    /// that their product has F's: `(sqrt(2 / D0) scale / sqrt(prod of hidden widths))^(1/L)`.
    private static func pepita(
        _ plan: NetworkPlan, devices: [Device], optimizer: OptimizerSettings,
        feedbackScale: Float, mirroring: FeedbackMirroring?, generator: inout SeededGenerator
    ) throws -> (layers: [PEPITALayer], stages: [any TrainingStage]) {
        let hidden = try denseLayers(plan, rule: "pepita", dropout: true)
        let features = plan.inputShape.reduce(1, *)
        let sizes = [features] + hidden.map(\.width) + [plan.classes]
        let layers = try (0...hidden.count).map { index in
            try PEPITALayer(
                device: devices[index], name: "layer\(index)", inputs: sizes[index],
                outputs: sizes[index + 1], isOutput: index == hidden.count,
                dropout: index < hidden.count ? hidden[index].dropout : 0, optimizer: optimizer,
                generator: &generator)
        }
        let bound = feedbackScale * (6 / Float(features)).squareRoot()
        let feedback = try Parameter(
            name: "feedback",
            value: devices[0].tensor(
                generator.uniform(features * plan.classes, in: -bound...bound),
                shape: [features, plan.classes]))
        let deviation = feedbackScale * (2 / Float(features)).squareRoot()
        var mirrored: ([Parameter], Float)?
        if let mirroring {
            guard devices.prefix(layers.count).allSatisfy({ $0 === devices[0] }) else {
                throw SigPropError.configuration(
                    "PEPITA's weight mirroring composes F from every layer's factor on the first "
                        + "layer's device, and this network's layers are placed on several; "
                        + "train it on one device (a single SIGPROP_DEVICE, no SIGPROP_SPLIT) or "
                        + "leave --pepita-mirror out")
            }
            let widths = hidden.reduce(1.0) { $0 * Double($1.width) }
            let each = Float(
                Foundation.pow(
                    Double(deviation) / widths.squareRoot(), 1 / Double(layers.count)))
            for layer in layers {
                try layer.mirror(with: mirroring, deviation: each, generator: &generator)
            }
            mirrored = (layers.compactMap(\.feedbackFactor), deviation)
        }
        let clean = layers.enumerated().map {
            PEPITACleanStage(layer: $1, isFirst: $0 == 0) as any TrainingStage
        }
        let modulated = layers.enumerated().map {
            PEPITAModulatedStage(
                layer: $1, feedback: $0 == 0 ? feedback : nil, mirrored: $0 == 0 ? mirrored : nil)
                as any TrainingStage
        }
        return (layers, clean + modulated)
    }

    /// Refuses a `plan` that `rule` cannot train, naming the layer (before anything is built).
    public static func check(_ plan: NetworkPlan, for rule: LearningRule.Name) throws {
        if plan.isSpiking, rule != .sigprop {
            throw SigPropError.configuration(
                "spiking networks (lif<N>, lifconv<N>) learn with Signal Propagation; --rule "
                    + "\(rule.rawValue) trains non-spiking layers only. Leave --rule out")
        }
        switch rule {
        case .sigprop, .efp: break
        case .ff: _ = try forwardForwardWidths(plan)
        case .pepita: _ = try denseLayers(plan, rule: "pepita", dropout: true)
        }
    }

    /// The widths of the layers Forward-Forward trains for `plan`, or why it cannot: it
    /// trains dense layers only, and writes the label over the first K inputs.
    static func forwardForwardWidths(_ plan: NetworkPlan) throws -> [Int] {
        let features = plan.inputShape.reduce(1, *)
        guard features > plan.classes else {
            throw SigPropError.configuration(
                "--rule ff writes the label over the first \(plan.classes) input values, but a "
                    + "sample has only \(features); use another rule for this data")
        }
        return try denseLayers(plan, rule: "ff", dropout: false).map(\.width)
    }

    /// `plan`'s learning layers, all dense, with the dropout after each (where `dropout`
    /// allows it), or an error naming the first layer that is not dense or is followed by
    /// what the rule cannot train.
    static func denseLayers(_ plan: NetworkPlan, rule: String, dropout: Bool) throws
        -> [(width: Int, dropout: Float)]
    {
        try plan.stages.prefix(plan.blockCount).enumerated().map { index, stage in
            let rates = stage.after.compactMap { step -> Float? in
                if case .dropout(let p) = step { p } else { nil }
            }
            guard case .dense(_, let outputs) = stage.kind,
                rates.count == stage.after.count, dropout || rates.isEmpty
            else {
                throw SigPropError.configuration(
                    "--rule \(rule) trains dense layers only, but layer \(index + 1) of the model "
                        + "(\(plan.stageName(index))) is not one, or is followed by pooling"
                        + (dropout ? "" : " or dropout")
                        + "; describe the network as dense layers, e.g. "
                        + "--model dense1000,dense1000,dense1000")
            }
            return (outputs, rates.reduce(0) { 1 - (1 - $0) * (1 - $1) })
        }
    }

    /// Every parameter, in a fixed order (checkpoints use the names).
    public var parameters: [Parameter] { optimizers.flatMap(\.parameters) }

    /// Every stage's optimizers in stage order, each once (under Error Forward-Propagation a
    /// block's two passes may both name its optimizer).
    public var optimizers: [Optimizer] { Self.unique(stages.flatMap(\.optimizers)) }

    /// State kept from batch to batch besides parameters (Forward-Forward's running means,
    /// PEPITA's feedback matrix).
    public var buffers: [Parameter] { Self.unique(stages.flatMap(\.buffers)) }

    private static func unique<T: AnyObject>(_ objects: [T]) -> [T] {
        var seen = Set<ObjectIdentifier>()
        return objects.filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    /// One-hot rows for `labels` on `stream`'s device (the first stage's without a stream).
    public func onehot(_ labels: [Int32], on stream: Stream? = nil) throws -> Tensor {
        try BatchContext.onehot(
            labels, classes: classes, device: stream?.device ?? device, on: stream)
    }

    /// Stages of a batch: one per learning block (the signal block first), then the output
    /// layer; under PEPITA and Error Forward-Propagation, every layer's first pass, then every
    /// layer's second pass.
    public var stageCount: Int { stages.count }

    /// The layer of `plan` that stage `stage` runs: itself, but where a batch makes two passes
    /// both passes of a layer run its weights, so they share the layer's device and stream.
    public func stageLayer(_ stage: Int) -> Int {
        rule.passes == 2 ? stage % plan.stages.count : stage
    }

    /// The device stage `stage` runs on.
    public func stageDevice(_ stage: Int) -> Device { stageDevices[stageLayer(stage)] }

    /// Stage `stage`'s name in traces and messages: `block1` (the signal block) ... `output`;
    /// where a batch makes two passes, with the pass: PEPITA's `.clean` or `.modulated`, Error
    /// Forward-Propagation's `.predict` or `.target` (the first), `.error` (the second).
    public func stageName(_ stage: Int) -> String {
        guard rule.passes == 2 else { return plan.stageName(stage) }
        let first = stage < plan.stages.count
        let pass =
            switch rule.name {
            case .pepita: first ? "clean" : "modulated"
            default: first ? (rule.errorFirstPassInForce == .learn ? "target" : "predict") : "error"
            }
        return plan.stageName(stageLayer(stage)) + "." + pass
    }

    /// Whether every norm is per sample, so the target stream can run on K rows
    /// (docs/signal-propagation.md's K-row shortcut) with results identical up to rounding.
    /// (Dropout draws a mask per sample, so it rules the shortcut out too.)
    /// Under Error Forward-Propagation only the first pass that learns takes it: the second
    /// pass's target is each sample's own error.
    public var kRowShortcutIsExact: Bool {
        rule.allowsKRowShortcutInFirstPass && plan.kRowShortcutIsExact
    }
}
