/// A spiking network run in chunks of time steps (`SpikingSettings.timeChunk`,
/// docs/spiking.md): every block runs a chunk's steps, hands the chunk's spikes to the next
/// block and carries its membrane on to the next chunk, so memory holds one chunk's spikes
/// whatever T is. What a block learns from is summed as the chunks go (the time mean of its
/// membrane, its spikes per step, its input's weighted time mean), so a batch's update is the
/// one the whole train gives, up to the order of the sums.

/// One spiking layer's pass over a batch, a chunk of steps at a time.
final class ChunkedSpikingPass {
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
    private var heldCurrent: Tensor?
    private let weights: (mean: [Float], total: Float)?

    init(layer: SpikingLayer, samples: Int, learns: Bool) {
        self.layer = layer
        self.samples = samples
        weights = learns ? SpikingLayer.timeMeanWeights(layer.dynamics) : nil
    }

    /// Runs the steps `chunk` on `input`: `samples` rows held at every step (`held`), or the
    /// chunk's spikes ([chunk.count · B, ...], step-major). Returns the chunk's spikes.
    func run(_ input: Tensor, held: Bool, chunk: Range<Int>, on stream: Stream?) throws -> Tensor {
        let device = input.device
        let current: Tensor
        if held {
            if heldCurrent == nil {
                heldCurrent = try layer.synapse.forward(input, on: stream).output
                if weights != nil { learningInput = input }
            }
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
        let spikes = try device.allocate([chunk.count * samples] + units, on: stream)
        try device.lifForward(
            current, dynamics: layer.dynamics, neuron: layer.neuron, spikes: spikes,
            representation: representation!, rate: rate!, chunk: chunk, state: state,
            on: stream)
        return spikes
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
        let afters = [signal.after] + hidden.map(\.after)
        for chunk in timeChunks ?? [0..<signal.input.dynamics.steps] {
            if let images {
                var h = try signal.encode(images, seed: encodingSeed, chunk: chunk, on: stream)
                h = try run.input[0].run(
                    h, held: signal.encoding == .direct, chunk: chunk, on: stream)
                for block in 1..<run.input.count {
                    h = try afters[block - 1].apply(to: h, dropout: nil, on: stream)
                    if block == run.input.count - 1 { h = try h.reshaped([h.rows, h.columns]) }
                    h = try run.input[block].run(h, held: false, chunk: chunk, on: stream)
                }
            }
            if let context {
                var t = try run.target[0].run(context, held: true, chunk: chunk, on: stream)
                t = try t.reshaped([t.rows] + signal.units)
                for block in 1..<run.target.count {
                    t = try afters[block - 1].apply(to: t, dropout: nil, on: stream)
                    t = try run.target[block].run(t, held: false, chunk: chunk, on: stream)
                }
            }
            // The chunk's spikes and currents are garbage now; the next chunk takes their
            // storage. A chunked network trains under the sequential schedule on one device
            // (`Pipeline` refuses the others), where this stream alone has work in flight.
            stream?.reuseFreedStorage()
        }
        return run
    }
}

/// A stage of a spiking network run in chunks of steps. The signal block's stage runs the
/// whole network's forward pass of the batch, chunk by chunk, and leaves the later stages
/// their passes in the batch's `shared`; every stage then learns from its own. The first
/// stage reads every block's weights, so the network trains on one device under the
/// sequential schedule, where each block has learned from the batch before
/// (`Pipeline` refuses the pipelined one).
final class ChunkedSpikingStage: TrainingStage {
    let blocks: SpikingBlocks
    /// 0: the signal block; 1 ..< blocks: the hidden blocks; then the output layer.
    let index: Int
    private static let key = "spiking.chunks"

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
        return StagePass(
            outputs: [try block.after.apply(to: t.representation!, dropout: nil, on: stream)],
            spikeRate: try block.activity.record(h.rate!, on: stream)
        ) { stream in
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
        let run = try blocks.runInChunks(
            images: try batch.samples(on: stream), encodingSeed: seed, context: context,
            learns: true, on: stream)
        batch.shared[Self.key] = run
        let (h, t) = (run.input[0], run.target[0])
        let target = try t.representation!.reshaped([context.rows] + signal.units)
        let (loss, rate) = (batch.loss, batch.learningRate)
        return StagePass(
            outputs: [try signal.after.apply(to: target, dropout: nil, on: stream)],
            spikeRate: try signal.activity.record(h.rate!, on: stream)
        ) { stream in
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
}
