/// Signal Propagation's blocks made of spiking layers (docs/spiking.md). Both streams are
/// spike trains through the same neurons: the input stream from the image (the same current
/// at every step, or its rate or latency spike train), the target stream from the label's
/// context. Each block's local loss reads the time mean of its membrane (or of a surrogate of
/// its spike) on both streams, so a block learns whether or not its neurons fire, and nothing
/// crosses back to an earlier block or an earlier step's spike.

/// A spiking block's forward on one batch: the spike trains the next block reads, the target
/// stream's representation (the next block's T0) and what the block's own update needs.
public struct SpikingBlockForward {
    public let h: Tensor
    public let t: Tensor
    public let targetRepresentation: Tensor
    let hPass: SpikingPass
    let tPass: SpikingPass
    let t0: Tensor
    let labels: Tensor?

    /// The block's local loss of this pass: d loss / d each stream's representation (one
    /// plane, or one per step) and the row losses.
    func localLoss(_ loss: LocalLoss, on stream: Stream?) throws
        -> (dH: Tensor, dT: Tensor, rowLosses: Tensor)
    {
        let units = Array(hPass.representation.shape.dropFirst())
        let (samples, targets) = (hPass.representation.rows, tPass.representation.rows)
        guard let hSteps = hPass.stepRepresentation, let tSteps = tPass.stepRepresentation else {
            let out = try loss.evaluate(
                h: hPass.representation,
                t: try tPass.representation.reshaped([targets] + units), t0: t0, labels: labels,
                on: stream)
            return (out.dH, try out.dT.reshaped(tPass.representation.shape), out.rowLosses)
        }
        // A loss at every step: step s's rows of both streams, the same T0; the block's loss
        // is the mean of the T (`Device.lifBackward` weighs each step's gradient by 1/T).
        let device = hSteps.device
        let steps = hSteps.rows / samples
        let (dH, dT) = (
            try device.allocate(hSteps.shape, on: stream),
            try device.allocate([steps * targets] + units, on: stream)
        )
        let rowLosses = try device.zeros([samples], on: stream)
        let tRows = try tSteps.reshaped([steps * targets] + units)
        for step in 0..<steps {
            let (h, t) = (
                try device.allocate([samples] + units, on: stream),
                try device.allocate([targets] + units, on: stream)
            )
            try device.copyRows(
                hSteps, (step * samples)..<((step + 1) * samples), into: h, at: 0, on: stream)
            try device.copyRows(
                tRows, (step * targets)..<((step + 1) * targets), into: t, at: 0, on: stream)
            let out = try loss.evaluate(h: h, t: t, t0: t0, labels: labels, on: stream)
            try device.copyRows(out.dH, 0..<samples, into: dH, at: step * samples, on: stream)
            try device.copyRows(out.dT, 0..<targets, into: dT, at: step * targets, on: stream)
            try device.axpby(
                alpha: 1 / Float(steps), out.rowLosses, beta: 1, rowLosses, on: stream)
        }
        return (dH, try dT.reshaped(tSteps.shape), rowLosses)
    }
}

/// Spikes of a block's input-stream units over an epoch: which units fired at all and how
/// often, for the `spike_rates` and `dead_fractions` of the metrics.
public final class SpikeActivity {
    /// Per unit, the sum over samples of spikes per step.
    let counts: Tensor
    private(set) var samples = 0

    init(units: Int, device: Device) throws { counts = try device.zeros([units]) }

    /// Adds a batch's rates ([B, units]) to the epoch's; returns the batch's mean spikes per
    /// unit per step ([1]), for the progress line.
    func record(_ rate: Tensor, on stream: Stream?) throws -> Tensor {
        let device = rate.device
        try device.channelSums(rate, channels: counts.count, into: counts, beta: 1, on: stream)
        samples += rate.rows
        // One run of every value: a GPU sums it in a work-group, where a column of B·units
        // rows would be one work-item's.
        let mean = try device.allocate([1], on: stream)
        try device.channelSums(
            rate, channels: 1, inner: rate.count, into: mean, alpha: 1 / Float(rate.count),
            on: stream)
        return mean
    }

    /// Starts a new epoch's count.
    public func reset() throws {
        try counts.device.fill(counts, with: 0)
        try counts.device.defaultStream.synchronize()
        samples = 0
    }

    /// Spikes per unit per step over the samples recorded, and the fraction of units that
    /// never fired; nil before any sample.
    public func read() throws -> (rate: Double, deadFraction: Double)? {
        guard samples > 0 else { return nil }
        let counts = try self.counts.device.read(self.counts)
        let total = counts.reduce(0) { $0 + Double($1) }
        return (
            total / Double(samples * counts.count),
            Double(counts.count(where: { $0 == 0 })) / Double(counts.count)
        )
    }
}

/// The first block: spiking neurons on the image (input part) and on the label's context
/// (a dense synapse K -> the block's units, no bias); one loss with T0 = onehot(c), one
/// optimizer over both parts.
public final class SpikingSignalBlock {
    public let input: SpikingLayer
    public let context: SpikingLayer
    let after: [FixedStep]
    public let optimizer: Optimizer
    /// One sample's units, [N] or [C, H, W].
    let units: [Int]
    public let activity: SpikeActivity

    /// Whether the context part keeps its random initial weights.
    public let fixedContext: Bool

    /// How the image reaches the input part over the steps.
    public let encoding: SpikeEncoding

    init(
        input: SpikingLayer, context: SpikingLayer, after: [FixedStep], units: [Int],
        encoding: SpikeEncoding, optimizer: OptimizerSettings, fixedContext: Bool,
        device: Device
    ) throws {
        self.input = input
        self.encoding = encoding
        self.context = context
        self.after = after
        self.units = units
        self.fixedContext = fixedContext
        self.optimizer = try Optimizer(
            settings: optimizer,
            parameters: input.parameters + (fixedContext ? [] : context.parameters)
                + input.neuron.parameters)
        activity = try SpikeActivity(units: units.reduce(1, *), device: device)
    }

    /// The images `x` as the input part reads them: `x` itself (direct encoding: the same
    /// current at every step), or their spike trains drawn with `seed` (with `chunk`, only
    /// those steps' planes).
    func encode(_ x: Tensor, seed: UInt32, chunk: Range<Int>? = nil, on stream: Stream?) throws
        -> Tensor
    {
        guard encoding != .direct else { return x }
        let steps = input.dynamics.steps
        let planes = chunk?.count ?? steps
        let trains = try x.device.allocate([planes * x.rows] + x.shape.dropFirst(), on: stream)
        try x.device.spikeEncode(
            x, encoding: encoding, steps: steps, seed: seed, chunk: chunk, into: trains,
            on: stream)
        return trains
    }

    /// `x` is the batch's images, encoded with `encodingSeed`; `context` onehot(c), or the
    /// K x K identity with `labels` = onehot(c) (the K-row shortcut).
    public func forward(
        x: Tensor, encodingSeed: UInt32 = 0, context onehot: Tensor, labels: Tensor? = nil,
        dropout: DropoutMasks? = nil, on stream: Stream?
    ) throws -> SpikingBlockForward {
        let hPass = try input.forward(
            try encode(x, seed: encodingSeed, on: stream), samples: x.rows, on: stream)
        let tPass = try context.forward(onehot, samples: onehot.rows, on: stream)
        let t = try tPass.spikes.reshaped([tPass.spikes.rows] + units)
        let target = try tPass.representation.reshaped([onehot.rows] + units)
        return SpikingBlockForward(
            h: try after.apply(to: hPass.spikes, dropout: dropout, on: stream),
            t: try after.apply(to: t, dropout: dropout, on: stream),
            targetRepresentation: try after.apply(to: target, dropout: nil, on: stream),
            hPass: hPass, tPass: tPass, t0: onehot, labels: labels)
    }

    /// The block's local loss on `pass` and one optimizer step; returns the row losses.
    public func learn(
        _ pass: SpikingBlockForward, loss: LocalLoss, learningRate: Float, on stream: Stream?
    ) throws -> Tensor {
        let (dH, dT, rowLosses) = try pass.localLoss(loss, on: stream)
        let step = optimizer.beginStep(learningRate: learningRate)
        try input.learn(from: [(pass.hPass, dH)], step: step, on: stream)
        if !fixedContext {
            try context.learn(from: [(pass.tPass, dT)], step: step, on: stream)
        } else if input.neuron.learns {
            // The target stream runs through the same neurons: its share of their gradient.
            _ = try context.currentGradient(pass.tPass, dT, on: stream)
        }
        try input.neuron.step(step, on: stream)
        return rowLosses
    }

    /// The input stream's spikes and representation at inference.
    public func infer(_ x: Tensor, encodingSeed: UInt32 = 0, on stream: Stream?) throws
        -> (spikes: Tensor, rep: Tensor)
    {
        let pass = try input.forward(
            try encode(x, seed: encodingSeed, on: stream), samples: x.rows, on: stream)
        return (
            try after.apply(to: pass.spikes, dropout: nil, on: stream), pass.representation
        )
    }

    /// The target stream's spikes and representation for the context `onehot`.
    public func inferTarget(_ onehot: Tensor, on stream: Stream?) throws
        -> (spikes: Tensor, rep: Tensor)
    {
        let pass = try context.forward(onehot, samples: onehot.rows, on: stream)
        return (
            try after.apply(
                to: try pass.spikes.reshaped([pass.spikes.rows] + units), dropout: nil,
                on: stream),
            try pass.representation.reshaped([onehot.rows] + units)
        )
    }
}

/// A later block: the same spiking layer, with the same weights, on both streams; loss with
/// T0 = the previous block's target representation.
public final class SpikingHiddenBlock {
    public let layer: SpikingLayer
    let after: [FixedStep]
    public let optimizer: Optimizer
    public let activity: SpikeActivity

    init(
        layer: SpikingLayer, after: [FixedStep], units: Int, optimizer: OptimizerSettings,
        device: Device
    ) throws {
        self.layer = layer
        self.after = after
        self.optimizer = try Optimizer(
            settings: optimizer, parameters: layer.parameters + layer.neuron.parameters)
        activity = try SpikeActivity(units: units, device: device)
    }

    /// `h` and `t` are spike trains of `samples` and `t0.rows` samples.
    public func forward(
        h: Tensor, t: Tensor, t0: Tensor, samples: Int, labels: Tensor? = nil,
        dropout: DropoutMasks? = nil, on stream: Stream?
    ) throws -> SpikingBlockForward {
        let hPass = try layer.forward(h, samples: samples, on: stream)
        let tPass = try layer.forward(t, samples: t0.rows, on: stream)
        return SpikingBlockForward(
            h: try after.apply(to: hPass.spikes, dropout: dropout, on: stream),
            t: try after.apply(to: tPass.spikes, dropout: dropout, on: stream),
            targetRepresentation: try after.apply(
                to: tPass.representation, dropout: nil, on: stream),
            hPass: hPass, tPass: tPass, t0: t0, labels: labels)
    }

    /// The block's local loss on `pass` and one optimizer step; returns the row losses.
    public func learn(
        _ pass: SpikingBlockForward, loss: LocalLoss, learningRate: Float, on stream: Stream?
    ) throws -> Tensor {
        let (dH, dT, rowLosses) = try pass.localLoss(loss, on: stream)
        let step = optimizer.beginStep(learningRate: learningRate)
        try layer.learn(from: [(pass.hPass, dH), (pass.tPass, dT)], step: step, on: stream)
        try layer.neuron.step(step, on: stream)
        return rowLosses
    }

    public func infer(_ spikes: Tensor, samples: Int, on stream: Stream?) throws
        -> (spikes: Tensor, rep: Tensor)
    {
        let pass = try layer.forward(spikes, samples: samples, on: stream)
        return (
            try after.apply(to: pass.spikes, dropout: nil, on: stream), pass.representation
        )
    }
}

/// A spiking network's blocks: Signal Propagation's signal block, hidden blocks and output
/// layer, each of spiking neurons.
public struct SpikingBlocks {
    public let signal: SpikingSignalBlock
    public let hidden: [SpikingHiddenBlock]
    public let output: SpikingOutputLayer
    /// The runs of steps every block takes in step with the others
    /// (`SpikingSettings.timeChunk`); nil: each block runs all T steps of a batch in turn.
    let timeChunks: [Range<Int>]?

    /// Every block's spike activity, the signal block first.
    public var activities: [SpikeActivity] { [signal.activity] + hidden.map(\.activity) }

    /// The blocks of `plan` (spiking), each on its stage's device, weights drawn in stage
    /// order from `generator`: the signal block's synapse, its context, the hidden blocks,
    /// the output layer.
    init(
        _ plan: NetworkPlan, devices: [Device], optimizer: OptimizerSettings,
        generator: inout SeededGenerator
    ) throws {
        let settings = plan.description.spiking
        timeChunks = settings.timeChunk == nil ? nil : settings.chunks
        func synapse(_ index: Int, _ generator: inout SeededGenerator) throws -> FeatureLayer {
            let stage = plan.stages[index]
            let (device, name) = (
                devices[index], index == plan.blockCount ? "output" : "block\(index)"
            )
            switch stage.kind {
            case .dense(let inputs, let outputs), .output(let inputs, let outputs):
                return try DenseLayer(
                    device: device, name: name, inputs: inputs, outputs: outputs,
                    activation: .identity, generator: &generator)
            case .conv(let inChannels, let outChannels, let kernel, let stride, let padding):
                return try ConvLayer(
                    device: device, name: name, inChannels: inChannels, outChannels: outChannels,
                    kernelSize: kernel, stride: stride, padding: padding, norm: .none,
                    activation: .identity, generator: &generator)
            }
        }
        let dynamics = settings.blockDynamics
        func neuron(_ name: String, _ device: Device) throws -> NeuronParameters {
            try NeuronParameters(
                name: name, neuron: settings.neuron, learnBeta: settings.learnBeta,
                learnThreshold: settings.learnThreshold, device: device)
        }
        let first = plan.stages[0]
        // The input and the context part feed the same neurons.
        let signalNeuron = try neuron("block0", devices[0])
        let input = SpikingLayer(
            synapse: try synapse(0, &generator), dynamics: dynamics, neuron: signalNeuron)
        let context = SpikingLayer(
            synapse: try DenseLayer(
                device: devices[0], name: "block0.context", inputs: plan.classes,
                outputs: first.outputShape.reduce(1, *), bias: false, activation: .identity,
                generator: &generator),
            dynamics: dynamics, neuron: signalNeuron)
        signal = try SpikingSignalBlock(
            input: input, context: context, after: first.after, units: first.outputShape,
            encoding: settings.encoding, optimizer: optimizer,
            fixedContext: plan.description.fixedContext, device: devices[0])
        hidden = try (1..<plan.blockCount).map { index in
            try SpikingHiddenBlock(
                layer: SpikingLayer(
                    synapse: try synapse(index, &generator), dynamics: dynamics,
                    neuron: try neuron("block\(index)", devices[index])),
                after: plan.stages[index].after,
                units: plan.stages[index].outputShape.reduce(1, *), optimizer: optimizer,
                device: devices[index])
        }
        output = try SpikingOutputLayer(
            layer: SpikingLayer(
                synapse: try synapse(plan.blockCount, &generator),
                dynamics: settings.outputDynamics,
                neuron: try neuron("output", devices[plan.blockCount])),
            optimizer: optimizer)
    }

    var stages: [any TrainingStage] {
        guard timeChunks != nil else { return [signal] + hidden + [output] }
        return (0...hidden.count + 1).map { ChunkedSpikingStage(blocks: self, index: $0) }
    }
}

/// The K-way spiking classifier on the last block's spikes: its logits are the time mean of
/// its membrane, trained with ordinary cross entropy; it predicts by spike count or by
/// membrane.
public final class SpikingOutputLayer {
    public let layer: SpikingLayer
    public let optimizer: Optimizer

    init(layer: SpikingLayer, optimizer: OptimizerSettings) throws {
        self.layer = layer
        self.optimizer = try Optimizer(
            settings: optimizer, parameters: layer.parameters + layer.neuron.parameters)
    }

    public func forward(_ spikes: Tensor, samples: Int, on stream: Stream?) throws -> SpikingPass {
        try layer.forward(
            try spikes.reshaped([spikes.rows, spikes.columns]), samples: samples, on: stream)
    }

    /// One cross-entropy step on the mean membrane of `pass`; returns the per-row losses.
    func learn(_ pass: SpikingPass, onehot: Tensor, learningRate: Float, on stream: Stream?)
        throws -> Tensor
    {
        let (dY, rows) = try LocalLoss.crossEntropy(
            logits: pass.representation, onehot: onehot, on: stream)
        let step = optimizer.beginStep(learningRate: learningRate)
        try layer.learn(from: [(pass, dY)], step: step, on: stream)
        try layer.neuron.step(step, on: stream)
        return rows
    }
}

extension SpikingSignalBlock: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    /// Hands on the input and target spike trains and the target representation.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let context = try BatchContext.onehot(
            batch.byClass ? (0..<batch.classes).map(Int32.init) : batch.labels,
            classes: batch.classes, device: stream.device, on: stream)
        // A rate encoding's draws are the batch's, so a resumed run draws what an
        // uninterrupted one would.
        let seed = encoding == .rate ? UInt32(truncatingIfNeeded: batch.generator.next()) : 0
        let pass = try forward(
            x: try batch.samples(on: stream), encodingSeed: seed, context: context,
            labels: batch.byClass ? try batch.onehot(on: stream) : nil, dropout: batch.dropout,
            on: stream)
        let spikeRate = try activity.record(pass.hPass.rate, on: stream)
        return StagePass(
            outputs: [pass.h, pass.t, pass.targetRepresentation], spikeRate: spikeRate
        ) { stream in
            try self.learn(pass, loss: batch.loss, learningRate: batch.learningRate, on: stream)
        }
    }
}

extension SpikingHiddenBlock: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let pass = try forward(
            h: inputs[0], t: inputs[1], t0: inputs[2], samples: batch.size,
            labels: batch.byClass ? try batch.onehot(on: stream) : nil, dropout: batch.dropout,
            on: stream)
        let spikeRate = try activity.record(pass.hPass.rate, on: stream)
        return StagePass(
            outputs: [pass.h, pass.t, pass.targetRepresentation], spikeRate: spikeRate
        ) { stream in
            try self.learn(pass, loss: batch.loss, learningRate: batch.learningRate, on: stream)
        }
    }
}

extension SpikingOutputLayer: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    /// Hands on the logits (the mean membrane, before its step).
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let pass = try forward(inputs[0], samples: batch.size, on: stream)
        return StagePass(outputs: [pass.representation]) { stream in
            try self.learn(
                pass, onehot: try batch.onehot(on: stream), learningRate: batch.learningRate,
                on: stream)
        }
    }
}
