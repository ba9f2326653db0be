import Foundation

/// A spiking network run in chunks of time steps (`SpikingSettings.timeChunk`,
/// docs/spiking.md): every block runs a chunk's steps, hands the chunk's spikes to the next
/// block and carries its membrane on to the next chunk, so memory holds one chunk's spikes
/// whatever T is. What a block learns from is summed as the chunks go (the time mean of its
/// membrane, its spikes per step, its input's weighted time mean), so a batch's update is the
/// one the whole train gives, up to the order of the sums.

/// A spiking layer's work on a batch, a chunk of steps at a time: it runs `chunk`'s steps on
/// `input` (`samples` rows held at every step with `held`, or the chunk's spikes,
/// [chunk.count · B, ...], step-major), carries its state on to the next chunk, and returns
/// the chunk's spikes.
protocol ChunkedLayerRun: AnyObject {
    func run(_ input: Tensor, held: Bool, chunk: Range<Int>, on stream: Stream?) throws -> Tensor
}

/// One spiking layer's pass over a batch, a chunk of steps at a time.
final class ChunkedSpikingPass: ChunkedLayerRun {
    let layer: SpikingLayer
    let samples: Int
    /// [B, ...]: the time mean of the membrane and the spikes per step, complete after the
    /// last chunk.
    private(set) var representation: Tensor?
    private(set) var rate: Tensor?
    /// The membrane carried on to the next chunk.
    private var state: Tensor?
    /// What the synapse learns from: the input held at every step, or the weighted time mean
    /// of its train (`SpikingLayer.timeMeanWeights`); nil where the pass does not learn.
    private(set) var learningInput: Tensor?
    /// The synapse's current for an input held at every step, computed once.
    private(set) var heldCurrent: Tensor?
    private let weights: (mean: [Float], total: Float)?

    /// `learns`: the pass sums what its synapse learns from, where the layer learns from the
    /// voltage (a surrogate's layer learns from a recomputation, `ChunkedSpikingGradient`).
    /// `heldCurrent`: the current of an input held at every step, where it is known already.
    init(layer: SpikingLayer, samples: Int, learns: Bool, heldCurrent: Tensor? = nil) {
        self.layer = layer
        self.samples = samples
        self.heldCurrent = heldCurrent
        weights =
            learns && layer.dynamics.surrogate == nil
            ? SpikingLayer.timeMeanWeights(layer.dynamics) : nil
    }

    func run(_ input: Tensor, held: Bool, chunk: Range<Int>, on stream: Stream?) throws -> Tensor {
        try run(input, held: held, chunk: chunk, keepingMembrane: false, on: stream).spikes
    }

    /// `run`, and with `keepingMembrane` every step's membrane of the chunk besides its spikes.
    func run(
        _ input: Tensor, held: Bool, chunk: Range<Int>, keepingMembrane: Bool, on stream: Stream?
    ) throws -> (spikes: Tensor, membrane: Tensor?) {
        let device = input.device
        let current: Tensor
        if held {
            if heldCurrent == nil {
                heldCurrent = try layer.synapse.forward(input, on: stream).output
            }
            if weights != nil { learningInput = input }
            current = heldCurrent!
        } else {
            current = try layer.synapse.forward(input, on: stream).output
            if let weights {
                try addToTimeMean(input, chunk: chunk, weights: weights.mean, on: stream)
            }
        }
        let units = Array(current.shape.dropFirst())
        if state == nil {
            (representation, rate, state) = (
                try device.allocate([samples] + units, on: stream),
                try device.allocate([samples] + units, on: stream),
                try device.allocate([samples] + units, on: stream)
            )
        }
        let planes = [chunk.count * samples] + units
        let spikes = try device.allocate(planes, on: stream)
        let membrane = keepingMembrane ? try device.allocate(planes, on: stream) : nil
        try device.lifForward(
            current, dynamics: layer.dynamics, neuron: layer.neuron, membrane: membrane,
            spikes: spikes, representation: representation!, rate: rate!, chunk: chunk,
            state: state, on: stream)
        return (spikes, membrane)
    }

    /// Adds the chunk's share `Σ_{s in chunk} c[s] x[s]` to the input's time mean.
    private func addToTimeMean(
        _ input: Tensor, chunk: Range<Int>, weights: [Float], on stream: Stream?
    ) throws {
        let device = input.device
        let plane = input.count / chunk.count
        let mean =
            try learningInput ?? device.allocate([samples] + input.shape.dropFirst(), on: stream)
        try device.gemm(
            try device.tensor(Array(weights[chunk]), shape: [1, chunk.count], on: stream),
            try input.reshaped([chunk.count, plane]), into: try mean.reshaped([1, plane]),
            beta: chunk.lowerBound == 0 ? 0 : 1, on: stream)
        learningInput = mean
    }

    /// The synapse's pass and output gradient for d loss / d the representation
    /// (`SpikingLayer.timeMeanPass`).
    func learningPass(_ gradient: Tensor, on stream: Stream?) throws -> (LayerPass, Tensor) {
        guard let input = learningInput, let weights else {
            throw SigPropError.configuration(
                "a chunked spiking pass learns after its chunks have run, and only where it was "
                    + "made to learn")
        }
        return try layer.timeMeanPass(input: input, gradient, total: weights.total, on: stream)
    }
}

/// Every layer's chunked pass of one batch: the input stream through the signal block's input
/// part, the hidden blocks and the output layer; the target stream through the context part
/// and the hidden blocks.
struct ChunkedSpikingRun {
    var input: [ChunkedSpikingPass] = []
    var target: [ChunkedSpikingPass] = []
}

extension SpikingBlocks {
    /// Whether the blocks learn from a surrogate, so that a chunked batch runs twice: once for
    /// the losses, once again to learn (`ChunkedSpikingGradient`).
    var learnsFromSurrogate: Bool { signal.input.dynamics.surrogate != nil }

    /// Runs `images` (the input stream, with their rate or latency trains drawn with
    /// `encodingSeed`) and `context` (the target stream) through every block, chunk by chunk;
    /// either may be nil. With `learns`, each pass also sums what its synapse learns from.
    func runInChunks(
        images: Tensor?, encodingSeed: UInt32 = 0, context: Tensor?, learns: Bool,
        on stream: Stream?
    ) throws -> ChunkedSpikingRun {
        let layers = hidden.map(\.layer)
        var run = ChunkedSpikingRun()
        if let images {
            run.input = ([signal.input] + layers + [output.layer]).map {
                ChunkedSpikingPass(layer: $0, samples: images.rows, learns: learns)
            }
        }
        if let context {
            run.target = ([signal.context] + layers).map {
                ChunkedSpikingPass(layer: $0, samples: context.rows, learns: learns)
            }
        }
        try runInChunks(
            images: images, encodingSeed: encodingSeed, context: context, input: run.input,
            target: run.target, on: stream)
        return run
    }

    /// Runs the chunks of `images` through the layers of `input` (the signal block's input
    /// part, the hidden blocks, then, where given, the output layer) and of `context` through
    /// `target` (the context part and the hidden blocks), each block's fixed steps between.
    func runInChunks(
        images: Tensor?, encodingSeed: UInt32, context: Tensor?, input: [any ChunkedLayerRun],
        target: [any ChunkedLayerRun], on stream: Stream?
    ) throws {
        let afters = [signal.after] + hidden.map(\.after)
        let outputIndex = hidden.count + 1
        for chunk in timeChunks ?? [0..<signal.input.dynamics.steps] {
            if let images {
                var h = try signal.encode(images, seed: encodingSeed, chunk: chunk, on: stream)
                h = try input[0].run(h, held: signal.encoding == .direct, chunk: chunk, on: stream)
                for block in 1..<input.count {
                    h = try afters[block - 1].apply(to: h, dropout: nil, on: stream)
                    if block == outputIndex { h = try h.reshaped([h.rows, h.columns]) }
                    h = try input[block].run(h, held: false, chunk: chunk, on: stream)
                }
            }
            if let context {
                var t = try target[0].run(context, held: true, chunk: chunk, on: stream)
                t = try t.reshaped([t.rows] + signal.units)
                for block in 1..<target.count {
                    t = try afters[block - 1].apply(to: t, dropout: nil, on: stream)
                    t = try target[block].run(t, held: false, chunk: chunk, on: stream)
                }
            }
            // The chunk's spikes and currents are garbage now; the next chunk takes their
            // storage. A chunked network trains under the sequential schedule on one device
            // (`Pipeline` refuses the others), where this stream alone has work in flight.
            stream?.reuseFreedStorage()
        }
    }

    /// A surrogate's blocks learn from every step's membrane, known only as the chunks run:
    /// the batch's chunks run again through the blocks (same weights, same spikes), and each
    /// block's synapses add the gradient of d loss / d R (`input` per block for the input
    /// stream, `target` for the target stream, of the representations of the `first` run)
    /// chunk by chunk (`ChunkedSpikingGradient`).
    func learnInChunks(
        _ first: ChunkedSpikingRun, images: Tensor, encodingSeed: UInt32, context: Tensor,
        input: [Tensor], target: [Tensor], on stream: Stream?
    ) throws {
        let tally = GradientTally()
        // A held input's current is the first run's.
        let inputRuns = zip(first.input, input).map {
            ChunkedSpikingGradient(
                layer: $0.layer, samples: images.rows, gradient: $1,
                heldCurrent: $0.heldCurrent, tally: tally)
        }
        let targetRuns = zip(first.target, target).map {
            ChunkedSpikingGradient(
                layer: $0.layer, samples: context.rows, gradient: $1,
                heldCurrent: $0.heldCurrent, tally: tally)
        }
        try runInChunks(
            images: images, encodingSeed: encodingSeed, context: context, input: inputRuns,
            target: targetRuns, on: stream)
        for run in inputRuns + targetRuns { try run.finish(on: stream) }
    }
}

/// Which synapses have a gradient from this batch already: the first pass sets it, the
/// others add to it.
final class GradientTally {
    private var started: Set<ObjectIdentifier> = []

    /// Whether `layer`'s gradient is to be added to (false the first time it is asked).
    func adds(to layer: FeatureLayer) -> Bool {
        !started.insert(ObjectIdentifier(layer)).inserted
    }
}

/// A surrogate-learning layer's pass over a batch run again, a chunk at a time, to learn:
/// with the reset subtracted and the neurons fixed, d loss / d the current at step s is
/// `Σ_{t ≥ s} beta^(t−s) g[t]`, `g[t] = (1/T) r'(U[t] − θ) ⊙ G` (G = d loss / d R). Summed
/// over the steps, the synapse's weight gradient is `Σ_t ĝ[t]ᵀ X̂[t]` and its bias's `Σ_t ĝ[t]`,
/// with `b[t] = Σ_{k ≤ t} beta^k`, `ĝ[t] = b[t] g[t]` and `X̂[t]` the input's leaky mean
/// `Σ_{s ≤ t} beta^(t−s) x[s] / b[t]`: sums that go forward in time, so each chunk adds its
/// steps' share and nothing of a chunk is kept (docs/spiking.md, memory and `T`).
final class ChunkedSpikingGradient: ChunkedLayerRun {
    /// The layer's forward pass of the chunks again (the same spikes as the first run's).
    private let forward: ChunkedSpikingPass
    /// d loss / d the layer's representation, [B, ...].
    let gradient: Tensor
    private let tally: GradientTally
    /// The neurons' decay, clamped to 0...1 as they read it.
    private let beta: Double
    /// `b[t]` of every step.
    private let leakySums: [Double]
    /// Per (sample, input), `Σ_{s ≤ t} beta^(t−s) x[s]` at the last step run.
    private var trace: Tensor?
    /// For an input held at every step: it and `Σ_t ĝ[t]`.
    private var held: (input: Tensor, gradient: Tensor)?

    /// `heldCurrent`: the current of an input held at every step, where the first run has it.
    init(
        layer: SpikingLayer, samples: Int, gradient: Tensor, heldCurrent: Tensor? = nil,
        tally: GradientTally
    ) {
        forward = ChunkedSpikingPass(
            layer: layer, samples: samples, learns: false, heldCurrent: heldCurrent)
        self.gradient = gradient
        self.tally = tally
        let beta = Double(min(max(layer.dynamics.neuron.beta, 0), 1))
        self.beta = beta
        var sum = 0.0
        leakySums = (0..<layer.dynamics.steps).map { _ in
            sum = beta * sum + 1
            return sum
        }
    }

    private var layer: SpikingLayer { forward.layer }

    func run(_ input: Tensor, held isHeld: Bool, chunk: Range<Int>, on stream: Stream?) throws
        -> Tensor
    {
        let device = input.device
        let (spikes, membrane) = try forward.run(
            input, held: isHeld, chunk: chunk, keepingMembrane: true, on: stream)
        let stepGradient = try device.allocate(spikes.shape, on: stream)
        let steps = Double(layer.dynamics.steps)
        try device.lifSurrogateGradient(
            membrane: membrane!, representationGradient: gradient,
            stepWeights: try device.tensor(
                chunk.map { Float(leakySums[$0] / steps) }, shape: [chunk.count], on: stream),
            dynamics: layer.dynamics, neuron: layer.neuron, into: stepGradient, on: stream)
        if isHeld {
            // The leaky mean of a held input is the input: only Σ_t ĝ[t] is needed.
            let plane = gradient.count
            let sum = try held?.gradient ?? device.allocate(gradient.shape, on: stream)
            try device.gemm(
                try device.tensor(
                    [Float](repeating: 1, count: chunk.count), shape: [1, chunk.count],
                    on: stream),
                try stepGradient.reshaped([chunk.count, plane]),
                into: try sum.reshaped([1, plane]), beta: chunk.lowerBound == 0 ? 0 : 1,
                on: stream)
            held = (input, sum)
        } else {
            try layer.synapse.accumulateGradients(
                LayerPass(
                    input: try leakyMean(input, chunk: chunk, on: stream), output: stepGradient,
                    normalized: nil, rstd: nil),
                outputGradient: stepGradient, accumulate: tally.adds(to: layer.synapse),
                on: stream)
        }
        return spikes
    }

    /// `X̂[t]` for the chunk's steps from its spikes `x` ([n·B, ...]): `A x + a ⊗ X̃` with
    /// `A[k][j] = beta^(k−j) / b[t0+k]` (j ≤ k), `a[k] = beta^(k+1) / b[t0+k]` and `X̃` the trace
    /// the chunk before left, which then moves on to the chunk's last step.
    private func leakyMean(_ x: Tensor, chunk: Range<Int>, on stream: Stream?) throws -> Tensor {
        let device = x.device
        let (n, first) = (chunk.count, chunk.lowerBound)
        let plane = x.count / n
        let rows = try x.reshaped([n, plane])
        // beta^0 ... beta^n.
        let power = (0...n).map { pow(beta, Double($0)) }
        var decay = [Float](repeating: 0, count: n * n)
        for k in 0..<n {
            for j in 0...k { decay[k * n + j] = Float(power[k - j] / leakySums[first + k]) }
        }
        let mean = try device.allocate(x.shape, on: stream)
        try device.gemm(
            try device.tensor(decay, shape: [n, n], on: stream), rows,
            into: try mean.reshaped([n, plane]), on: stream)
        if first > 0, let trace {
            let fromTrace = (0..<n).map { Float(power[$0 + 1] / leakySums[first + $0]) }
            try device.gemm(
                try device.tensor(fromTrace, shape: [n, 1], on: stream), trace,
                into: try mean.reshaped([n, plane]), beta: 1, on: stream)
        }
        let carried = try trace ?? device.allocate([1, plane], on: stream)
        let toEnd = (0..<n).map { Float(power[n - 1 - $0]) }
        try device.gemm(
            try device.tensor(toEnd, shape: [1, n], on: stream), rows, into: carried,
            beta: first > 0 ? Float(power[n]) : 0, on: stream)
        trace = carried
        return mean
    }

    /// Adds a held input's gradient, once every chunk has run.
    func finish(on stream: Stream?) throws {
        guard let held else { return }
        try layer.synapse.accumulateGradients(
            LayerPass(input: held.input, output: held.gradient, normalized: nil, rstd: nil),
            outputGradient: held.gradient, accumulate: tally.adds(to: layer.synapse),
            on: stream)
    }
}

/// A stage of a spiking network run in chunks of steps. The signal block's stage runs the
/// whole network's forward pass of the batch, chunk by chunk, and leaves the later stages
/// their passes in the batch's `shared`; every stage then learns from its own. Under a
/// surrogate the signal block's stage also takes every block's loss and runs the chunks again
/// for the blocks' gradients (`SpikingBlocks.learnInChunks`), and every stage steps. The first
/// stage reads every block's weights, so the network trains on one device under the
/// sequential schedule, where each block has learned from the batch before
/// (`Pipeline` refuses the pipelined one).
final class ChunkedSpikingStage: TrainingStage {
    let blocks: SpikingBlocks
    /// 0: the signal block; 1 ..< blocks: the hidden blocks; then the output layer.
    let index: Int
    private static let key = "spiking.chunks"
    /// Under a surrogate, each block's row losses, taken by the signal block's stage.
    private static let lossesKey = "spiking.chunks.losses"

    init(blocks: SpikingBlocks, index: Int) {
        self.blocks = blocks
        self.index = index
    }

    var optimizers: [Optimizer] {
        switch index {
        case 0: [blocks.signal.optimizer]
        case blocks.hidden.count + 1: [blocks.output.optimizer]
        default: [blocks.hidden[index - 1].optimizer]
        }
    }

    func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws -> StagePass {
        let labels = batch.byClass ? try batch.onehot(on: stream) : nil
        if index == 0 { return try signalForward(batch, labels: labels, on: stream) }
        guard let run = batch.shared[Self.key] as? ChunkedSpikingRun else {
            throw SigPropError.configuration(
                "a chunked spiking block runs after the signal block's stage, which runs the "
                    + "batch's chunks")
        }
        let (loss, rate) = (batch.loss, batch.learningRate)
        if index == blocks.hidden.count + 1 {
            let output = blocks.output
            let pass = run.input[index]
            let logits = pass.representation!
            return StagePass(outputs: [logits]) { stream in
                let (dY, rows) = try LocalLoss.crossEntropy(
                    logits: logits, onehot: try batch.onehot(on: stream), on: stream)
                let step = output.optimizer.beginStep(learningRate: rate)
                try output.layer.synapse.learn(
                    from: [try pass.learningPass(dY, on: stream)], step: step, on: stream)
                try output.layer.neuron.step(step, on: stream)
                return rows
            }
        }
        let block = blocks.hidden[index - 1]
        let (h, t, t0) = (run.input[index], run.target[index], inputs[0])
        let outputs = [try block.after.apply(to: t.representation!, dropout: nil, on: stream)]
        let spikeRate = try block.activity.record(h.rate!, on: stream)
        if let losses = batch.shared[Self.lossesKey] as? [Tensor] {
            return StagePass(outputs: outputs, spikeRate: spikeRate) { stream in
                let step = block.optimizer.beginStep(learningRate: rate)
                try step.apply(to: block.layer.synapse.parameters, on: stream)
                try block.layer.neuron.step(step, on: stream)
                return losses[self.index]
            }
        }
        return StagePass(outputs: outputs, spikeRate: spikeRate) { stream in
            let out = try loss.evaluate(
                h: h.representation!, t: t.representation!, t0: t0, labels: labels, on: stream)
            let step = block.optimizer.beginStep(learningRate: rate)
            try block.layer.synapse.learn(
                from: [
                    try h.learningPass(out.dH, on: stream), try t.learningPass(out.dT, on: stream),
                ], step: step, on: stream)
            try block.layer.neuron.step(step, on: stream)
            return out.rowLosses
        }
    }

    /// Runs the batch's chunks through every block; hands on the target stream's
    /// representation (the next block's T0) and learns as the signal block.
    private func signalForward(_ batch: BatchContext, labels: Tensor?, on stream: Stream) throws
        -> StagePass
    {
        let signal = blocks.signal
        let context = try BatchContext.onehot(
            batch.byClass ? (0..<batch.classes).map(Int32.init) : batch.labels,
            classes: batch.classes, device: stream.device, on: stream)
        let seed =
            signal.encoding == .rate ? UInt32(truncatingIfNeeded: batch.generator.next()) : 0
        let images = try batch.samples(on: stream)
        let run = try blocks.runInChunks(
            images: images, encodingSeed: seed, context: context, learns: true, on: stream)
        batch.shared[Self.key] = run
        let (h, t) = (run.input[0], run.target[0])
        let target = try t.representation!.reshaped([context.rows] + signal.units)
        let (loss, rate) = (batch.loss, batch.learningRate)
        let outputs = [try signal.after.apply(to: target, dropout: nil, on: stream)]
        let spikeRate = try signal.activity.record(h.rate!, on: stream)
        if blocks.learnsFromSurrogate {
            let losses = try surrogateGradients(
                run, images: images, encodingSeed: seed, context: context, labels: labels,
                loss: loss, on: stream)
            batch.shared[Self.lossesKey] = losses
            return StagePass(outputs: outputs, spikeRate: spikeRate) { stream in
                let step = signal.optimizer.beginStep(learningRate: rate)
                try step.apply(
                    to: signal.input.synapse.parameters
                        + (signal.fixedContext ? [] : signal.context.synapse.parameters),
                    on: stream)
                try signal.input.neuron.step(step, on: stream)
                return losses[0]
            }
        }
        return StagePass(outputs: outputs, spikeRate: spikeRate) { stream in
            let out = try loss.evaluate(
                h: h.representation!, t: target, t0: context, labels: labels, on: stream)
            let step = signal.optimizer.beginStep(learningRate: rate)
            try signal.input.synapse.learn(
                from: [try h.learningPass(out.dH, on: stream)], step: step, on: stream)
            if !signal.fixedContext {
                try signal.context.synapse.learn(
                    from: [
                        try t.learningPass(
                            try out.dT.reshaped(t.representation!.shape), on: stream)
                    ], step: step, on: stream)
            }
            try signal.input.neuron.step(step, on: stream)
            return out.rowLosses
        }
    }
    /// Every block's loss on the first run's representations (T0 handed from block to block
    /// as the stages hand it), then the chunks again for the blocks' gradients; returns each
    /// block's row losses.
    private func surrogateGradients(
        _ run: ChunkedSpikingRun, images: Tensor, encodingSeed: UInt32, context: Tensor,
        labels: Tensor?, loss: LocalLoss, on stream: Stream
    ) throws -> [Tensor] {
        let afters = [blocks.signal.after] + blocks.hidden.map(\.after)
        var t0 = context
        var (dH, dT, rows) = ([Tensor](), [Tensor](), [Tensor]())
        for block in run.target.indices {
            let representation = run.target[block].representation!
            let target =
                block == 0
                ? try representation.reshaped([context.rows] + blocks.signal.units)
                : representation
            let out = try loss.evaluate(
                h: run.input[block].representation!, t: target, t0: t0, labels: labels,
                on: stream)
            dH.append(out.dH)
            dT.append(try out.dT.reshaped(representation.shape))
            rows.append(out.rowLosses)
            t0 = try afters[block].apply(to: target, dropout: nil, on: stream)
        }
        try blocks.learnInChunks(
            run, images: images, encodingSeed: encodingSeed, context: context, input: dH,
            target: dT, on: stream)
        return rows
    }
}
