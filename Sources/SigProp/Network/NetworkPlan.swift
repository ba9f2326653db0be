/// A description worked out for one input shape and number of classes: each stage's layer
/// with its real width, its shapes, parameters and multiply-adds. Built before anything is
/// allocated, so a description that cannot work is refused with the layer and its position;
/// `Network` builds from it, `MemoryEstimate` sizes it and `--describe` prints it.
public struct NetworkPlan: Sendable {
    /// One learning block, or the output layer (the last stage).
    public struct Stage: Sendable {
        public enum Kind: Sendable, Equatable {
            case dense(inputs: Int, outputs: Int)
            case conv(inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int)
            /// The output layer: dense to one unit per class, no norm.
            case output(inputs: Int, classes: Int)
        }

        public let kind: Kind
        /// The layer-list entry (1-based) it comes from; nil for the output layer.
        public let position: Int?
        /// Shapes of one sample: what the stage reads, what its layer writes, and what it
        /// hands on after its fixed steps.
        public let inputShape: [Int]
        public let outputShape: [Int]
        public let handedOnShape: [Int]
        /// The fixed steps after the layer (pooling, dropout, flatten), in order.
        let after: [FixedStep]
        public let norm: NormKind
        /// Whether the stage is a layer of spiking neurons (the output layer of a spiking
        /// network is one too).
        public let spiking: Bool
        /// Parameter tensors: name and element count, and whether an optimizer steps them.
        public let parameters: [(name: String, elements: Int, trained: Bool)]
        /// Multiply-adds per sample of the forward pass on the input stream (the signal
        /// block's context projection included; a spiking stage's synapse runs at every time
        /// step but on a directly encoded image, which is the same at every step).
        public let multiplyAdds: Double

        public var parameterCount: Int { parameters.reduce(0) { $0 + $1.elements } }
    }

    public let description: NetworkDescription
    public let inputShape: [Int]
    public let classes: Int
    /// The learning blocks (the signal block first), then the output layer.
    public let stages: [Stage]

    /// Learning blocks (stages but the output layer).
    public var blockCount: Int { stages.count - 1 }

    /// The pools that drop a partial window at the edge of their input (no `ceilPools`), each
    /// as "layer 9, 'pool' (7x7 to 3x3)": what a user of local losses wants to know.
    public let poolsDroppingEdges: [String]

    /// Whether the network is made of spiking layers.
    public var isSpiking: Bool { stages[0].spiking }

    /// The steps a spiking network's blocks run in step (`SpikingSettings.timeChunk`); nil:
    /// whole trains, or no spiking layers.
    public var timeChunk: Int? { isSpiking ? description.spiking.timeChunk : nil }

    public init(_ description: NetworkDescription, inputShape: [Int], classes: Int) throws {
        guard inputShape.count == 3, inputShape.allSatisfy({ $0 >= 1 }) else {
            throw SigPropError.configuration(
                "the input shape must be [channels, height, width], got \(inputShape)")
        }
        guard classes >= 2 else {
            throw SigPropError.configuration(
                "a classifier needs at least 2 classes, got \(classes)")
        }
        guard description.widthMultiplier.isFinite, description.widthMultiplier > 0 else {
            throw SigPropError.configuration(
                "the width multiplier must be a positive number, got "
                    + "\(description.widthMultiplier)")
        }
        for (kind, allowed, flag) in [
            (description.denseNorm, [NormKind.layer, .batch, .none], "--dense-norm"),
            (description.convNorm, [NormKind.instance, .batch, .none], "--conv-norm"),
        ] where !allowed.contains(kind) {
            throw SigPropError.configuration(
                "\(flag) \(kind.rawValue) is not allowed. Valid values: "
                    + allowed.map(\.rawValue).joined(separator: ", "))
        }
        self.description = description
        self.inputShape = inputShape
        self.classes = classes
        let layers = description.layers
        func refuse(_ position: Int, _ reason: String) -> SigPropError {
            .configuration("the model's layer \(position + 1), '\(layers[position])', \(reason)")
        }
        guard let first = layers.firstIndex(where: \.learns) else {
            throw SigPropError.configuration(
                "the model has no dense or conv layer, so nothing would learn "
                    + "(model: '\(description.layerList)'). Give at least one, e.g. dense1024")
        }
        if first > 0 {
            throw refuse(
                0,
                "comes before any dense or conv layer: pooling and dropout follow a learning "
                    + "block. Start the list with a dense or conv layer")
        }
        let spiking = layers[first].spikes
        if let mixed = layers.firstIndex(where: { $0.learns && $0.spikes != spiking }) {
            let mismatch =
                spiking
                ? "is not spiking, while the first layer is"
                : "is spiking, while the first layer is not"
            throw refuse(
                mixed,
                mismatch + ": a network is spiking throughout (lif<N>, lifconv<N>) or not at all")
        }
        if spiking { try description.spiking.validate() }
        if spiking, description.spiking.timeChunk != nil,
            let dropout = layers.firstIndex(where: {
                if case .dropout(let p) = $0 { p > 0 } else { false }
            })
        {
            throw refuse(
                dropout,
                "masks a batch's whole spike train, and --time-chunk runs the train in chunks of "
                    + "steps: drop the dropout, or --time-chunk")
        }
        let steps = spiking ? description.spiking.timesteps : 1
        // The first synapse runs once per sample on a directly encoded image, at every step
        // on a spike train.
        let firstSteps = spiking && description.spiking.encoding != .direct ? steps : 1

        var stages: [Stage] = []
        var droppingEdges: [String] = []
        var shape = inputShape
        var position = 0
        while position < layers.count {
            let index = stages.count
            let name = "block\(index)"
            let norm: NormKind
            let kind: Stage.Kind
            var output: [Int]
            switch layers[position] {
            case .dense(let width), .lif(let width):
                guard width >= 1 else { throw refuse(position, "has a width below 1") }
                let outputs = description.scaled(width)
                kind = .dense(inputs: shape.reduce(1, *), outputs: outputs)
                norm = spiking ? .none : description.denseNorm
                output = [outputs]
            case .conv(let channels, let kernel, let stride, let padding),
                .lifConv(let channels, let kernel, let stride, let padding):
                guard channels >= 1 else { throw refuse(position, "has a width below 1") }
                guard shape.count == 3 else {
                    throw refuse(
                        position,
                        "follows a dense layer, whose output has no image to convolve. Put the "
                            + "conv layers before the dense ones")
                }
                guard kernel >= 1, stride >= 1, padding >= 0, padding < kernel else {
                    throw refuse(
                        position,
                        "needs a kernel and stride of at least 1 and a padding below the kernel")
                }
                let (height, width) = (shape[1] + 2 * padding, shape[2] + 2 * padding)
                guard height >= kernel, width >= kernel else {
                    throw refuse(
                        position,
                        "has a \(kernel)x\(kernel) kernel, larger than its \(shape[1])x\(shape[2]) "
                            + "input with padding \(padding)")
                }
                let outChannels = description.scaled(channels)
                kind = .conv(
                    inChannels: shape[0], outChannels: outChannels, kernel: kernel,
                    stride: stride, padding: padding)
                norm = spiking ? .none : description.convNorm
                output = [
                    outChannels, (height - kernel) / stride + 1, (width - kernel) / stride + 1,
                ]
            case .pool, .dropout:
                preconditionFailure("fixed steps are consumed with the block before them")
            }
            let blockPosition = position
            // The fixed steps that follow, up to the next learning layer.
            var after: [FixedStep] = []
            var handedOn = output
            position += 1
            while position < layers.count, !layers[position].learns {
                switch layers[position] {
                case .pool(let poolKind, let size):
                    guard handedOn.count == 3 else {
                        throw refuse(
                            position,
                            "follows a dense layer: pooling needs an image. Pool before the "
                                + "dense layers")
                    }
                    guard size >= 1, handedOn[1] >= size, handedOn[2] >= size else {
                        throw refuse(
                            position,
                            "shrinks its \(handedOn[1])x\(handedOn[2]) input to nothing. "
                                + "Remove a pool or use larger images")
                    }
                    let step = FixedStep.pool(poolKind, size: size, ceil: description.ceilPools)
                    after.append(step)
                    let pooled = Array(try step.outputShape(for: [1] + handedOn).dropFirst())
                    if !description.ceilPools,
                        handedOn[1] % size != 0 || handedOn[2] % size != 0
                    {
                        let name = layers[position].description
                        droppingEdges.append(
                            "layer \(position + 1), '\(name)' (\(handedOn[1])x\(handedOn[2]) "
                                + "to \(pooled[1])x\(pooled[2]))")
                    }
                    handedOn = pooled
                case .dropout(let p):
                    guard p >= 0, p < 1 else {
                        throw refuse(position, "needs a probability in 0..<1")
                    }
                    if p > 0 { after.append(.dropout(p)) }
                default: break
                }
                position += 1
            }
            let nextIsDense: Bool = {
                guard position < layers.count else { return false }
                switch layers[position] {
                case .dense, .lif: return true
                default: return false
                }
            }()
            if handedOn.count == 3, nextIsDense {
                after.append(.flatten)
            }
            let outputElements = output.reduce(1, *)
            var parameters =
                Self.parameters(name, kind: kind, norm: norm)
                + Self.neuronParameters(name, spiking ? description.spiking : nil)
            var multiplyAdds =
                Self.multiplyAdds(kind, output: output) * Double(index == 0 ? firstSteps : steps)
            if index == 0 {
                // The signal block's context part: one-hot label -> the block's output shape
                // (a spiking one has no norm: its neurons follow).
                let trained = !description.fixedContext
                parameters.append(("\(name).context.weight", outputElements * classes, trained))
                if !spiking {
                    parameters += [
                        ("\(name).context.norm.weight", outputElements, trained),
                        ("\(name).context.norm.bias", outputElements, trained),
                    ]
                }
                multiplyAdds += Double(classes * outputElements)
            }
            stages.append(
                Stage(
                    kind: kind, position: blockPosition + 1, inputShape: shape,
                    outputShape: output, handedOnShape: handedOn, after: after, norm: norm,
                    spiking: spiking, parameters: parameters, multiplyAdds: multiplyAdds))
            shape = handedOn
        }
        let features = shape.reduce(1, *)
        let kind = Stage.Kind.output(inputs: features, classes: classes)
        stages.append(
            Stage(
                kind: kind, position: nil, inputShape: shape, outputShape: [classes],
                handedOnShape: [classes], after: [], norm: .none, spiking: spiking,
                parameters: Self.parameters("output", kind: kind, norm: .none)
                    + Self.neuronParameters("output", spiking ? description.spiking : nil),
                multiplyAdds: Double(features * classes * steps)))
        self.stages = stages
        poolsDroppingEdges = droppingEdges
    }

    /// A layer's parameter tensors, in the order `DenseLayer` and `ConvLayer` create them.
    static func parameters(_ name: String, kind: Stage.Kind, norm: NormKind)
        -> [(name: String, elements: Int, trained: Bool)]
    {
        let (weights, outputs): (Int, Int)
        switch kind {
        case .dense(let inputs, let width), .output(let inputs, let width):
            (weights, outputs) = (inputs * width, width)
        case .conv(let inChannels, let outChannels, let kernel, _, _):
            (weights, outputs) = (outChannels * inChannels * kernel * kernel, outChannels)
        }
        return [("\(name).weight", weights, true), ("\(name).bias", outputs, true)]
            + (norm == .none
                ? []
                : [("\(name).norm.weight", outputs, true), ("\(name).norm.bias", outputs, true)])
    }

    /// A spiking layer's learned beta and threshold (one value each; none where fixed).
    static func neuronParameters(_ name: String, _ settings: SpikingSettings?)
        -> [(name: String, elements: Int, trained: Bool)]
    {
        guard let settings else { return [] }
        return (settings.learnBeta ? [("\(name).beta", 1, true)] : [])
            + (settings.learnThreshold ? [("\(name).threshold", 1, true)] : [])
    }

    static func multiplyAdds(_ kind: Stage.Kind, output: [Int]) -> Double {
        switch kind {
        case .dense(let inputs, let outputs), .output(let inputs, let outputs):
            Double(inputs * outputs)
        case .conv(let inChannels, _, let kernel, _, _):
            Double(output.reduce(1, *) * inChannels * kernel * kernel)
        }
    }

    /// Whether every norm is per sample and nothing draws masks per sample, so the target
    /// stream can run on one row per class (docs/signal-propagation.md's K-row shortcut).
    public var kRowShortcutIsExact: Bool {
        stages.allSatisfy(\.norm.isPerSample) && !description.hasDropout
    }

    /// Rows of the target stream in a batch of `batchSize`: one per class where the K-row
    /// shortcut is asked for and exact, else the batch's.
    public func targetRows(batchSize: Int, kRowShortcut: Bool) -> Int {
        kRowShortcut && kRowShortcutIsExact ? classes : batchSize
    }
}
