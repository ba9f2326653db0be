/// What a spiking layer's forward pass keeps: its synapse's pass (the input and the current),
/// the spikes of every step (and, for a surrogate's gradient, the membrane), and what it
/// gives out.
public struct SpikingPass {
    let synapse: LayerPass
    /// [T·B, ...]: step t's spikes are rows t·B ..< (t+1)·B, for the next layer and for the
    /// gradient's resets.
    public let spikes: Tensor
    /// [T·B, ...]; nil where the gradient does not read it (learning from the voltage).
    let membrane: Tensor?
    /// [B, ...]: the time mean of the membrane (or of its surrogate): what the local loss
    /// and the readouts read.
    public let representation: Tensor
    /// [B, ...]: spikes per step of each unit.
    public let rate: Tensor
    /// [T·B, ...]: each step's value of what the representation averages, where the local
    /// loss is taken at every step.
    public let stepRepresentation: Tensor?
}

/// A layer of leaky integrate-and-fire neurons fed by a dense or conv synapse: the synapse
/// turns each step's input into a current, the neurons integrate it over T steps. The
/// synapse is an ordinary `FeatureLayer` (no norm, identity activation) run once over all
/// T·B rows of a spike train, or once over B rows of an input held for every step (direct
/// encoding, the label's context). Learning goes from the representation's gradient through
/// the membrane's own recurrence to the current, never through a spike
/// (`Device.lifBackward`, or where the neurons allow it a factor per step: `stepWeights`),
/// then into the synapse as into any layer; where the neurons learn
/// their beta and threshold, the same scan gives their gradients (`NeuronParameters`, which
/// the block steps).
public final class SpikingLayer {
    public let synapse: FeatureLayer
    public let dynamics: LIFDynamics
    /// Beta and the threshold, shared with the layers of the same neurons.
    public let neuron: NeuronParameters
    /// The synapse's parameters (the block adds `neuron`'s once).
    public var parameters: [Parameter] { synapse.parameters }

    init(synapse: FeatureLayer, dynamics: LIFDynamics, neuron: NeuronParameters) {
        self.synapse = synapse
        self.dynamics = dynamics
        self.neuron = neuron
        stepWeights = Self.stepWeights(dynamics, learnedNeurons: neuron.learns)
    }

    /// The layer's T steps for `samples` samples: `input` holds `samples` rows (the same
    /// input at every step) or T·`samples` (a spike train, step-major).
    public func forward(_ input: Tensor, samples: Int, on stream: Stream?) throws -> SpikingPass {
        let steps = dynamics.steps
        guard input.rows == samples || input.rows == steps * samples else {
            throw SigPropError.shapeMismatch(
                operation: "SpikingLayer",
                detail:
                    "an input of \(input.rows) rows is neither \(samples) samples nor \(steps) "
                    + "steps of them")
        }
        let pass = try synapse.forward(input, on: stream)
        let device = input.device
        let units = Array(pass.output.shape.dropFirst())
        let spikes = try device.allocate([steps * samples] + units, on: stream)
        let membrane =
            dynamics.gradientReadsMembrane || neuron.learns
            ? try device.allocate([steps * samples] + units, on: stream) : nil
        let perSample = try (0..<2).map { _ in try device.allocate([samples] + units, on: stream) }
        let stepValues =
            dynamics.lossAtEveryStep
            ? try device.allocate([steps * samples] + units, on: stream) : nil
        try device.lifForward(
            pass.output, dynamics: dynamics, neuron: neuron, membrane: membrane, spikes: spikes,
            representation: perSample[0], rate: perSample[1], stepRepresentation: stepValues,
            on: stream)
        return SpikingPass(
            synapse: pass, spikes: spikes, membrane: membrane, representation: perSample[0],
            rate: perSample[1], stepRepresentation: stepValues)
    }

    /// d loss / d the synapse's current for `pass`, from d loss / d its representation;
    /// where the neurons learn, their gradients are added to `neuron`'s.
    func currentGradient(_ pass: SpikingPass, _ gradient: Tensor, on stream: Stream?) throws
        -> Tensor
    {
        let device = pass.spikes.device
        let current = try device.allocate(pass.synapse.output.shape, on: stream)
        let partials =
            neuron.learns
            ? try device.allocate([pass.representation.count, 2], on: stream) : nil
        try device.lifBackward(
            membrane: pass.membrane, spikes: pass.spikes, representationGradient: gradient,
            dynamics: dynamics, neuron: neuron, into: current, neuronPartials: partials,
            on: stream)
        if let partials { try neuron.accumulate(partials, on: stream) }
        return current
    }

    /// The synapse's learning step from the representation's gradient of every pass (the
    /// input and target streams, summed); the neurons' gradients go to `neuron`, which the
    /// block steps once for all the layers that share it.
    func learn(
        from passes: [(pass: SpikingPass, representationGradient: Tensor)], step: UpdateRule,
        on stream: Stream?
    ) throws {
        try synapse.learn(
            from: try passes.map { pass, gradient in
                if let weights = stepWeights, pass.synapse.input.rows > pass.rate.rows {
                    return try timeMeanPass(pass, gradient, weights: weights, on: stream)
                }
                return (pass.synapse, try currentGradient(pass, gradient, on: stream))
            }, step: step, on: stream)
    }

    /// Where the loss reads the time mean of the membrane, the reset subtracts and beta and the
    /// threshold are fixed, d loss / d `I[s]` is d loss / d `R` times a factor of the step
    /// alone: `v[s] = (1/T) Σ_{t ≥ s} beta^(t−s)`, what a unit of current at step s adds to
    /// the mean membrane (docs/spiking.md). Then the synapse's gradient over a spike train
    /// `x[s]` is that of one pass over B rows: the input `Σ_s c[s] x[s]` with `c = v / Σ v`,
    /// the output's gradient `(Σ v)` d loss / d `R` (its bias gets `Σ_s v[s]` times the
    /// batch's sum, as over the T steps). `c` and `Σ v`; nil elsewhere.
    let stepWeights: (mean: [Float], total: Float)?

    private static func stepWeights(_ dynamics: LIFDynamics, learnedNeurons: Bool)
        -> (mean: [Float], total: Float)?
    {
        guard dynamics.learnsFromTimeMean, !learnedNeurons, dynamics.steps > 1 else {
            return nil
        }
        return timeMeanWeights(dynamics)
    }

    /// `c` and `Σ v` of `stepWeights` for any `dynamics.steps` (one step: `c` = [1], 1).
    static func timeMeanWeights(_ dynamics: LIFDynamics) -> (mean: [Float], total: Float) {
        let (steps, beta) = (dynamics.steps, Double(min(max(dynamics.neuron.beta, 0), 1)))
        var v = [Double](repeating: 0, count: steps)
        var later = 0.0
        for s in stride(from: steps - 1, through: 0, by: -1) {
            later = 1 / Double(steps) + beta * later
            v[s] = later
        }
        let total = v.reduce(0, +)
        return (v.map { Float($0 / total) }, Float(total))
    }

    /// The synapse's pass and output gradient over B rows that give the gradient of `pass`
    /// (over T·B rows of a spike train) from d loss / d its representation (`stepWeights`).
    func timeMeanPass(
        _ pass: SpikingPass, _ gradient: Tensor, weights: (mean: [Float], total: Float),
        on stream: Stream?
    ) throws -> (LayerPass, Tensor) {
        let input = pass.synapse.input
        let device = input.device
        let (steps, samples) = (dynamics.steps, pass.rate.rows)
        let plane = input.count / steps
        let mean = try device.allocate([1, plane], on: stream)
        try device.gemm(
            try device.tensor(weights.mean, shape: [1, steps], on: stream),
            try input.reshaped([steps, plane]), into: mean, on: stream)
        return try timeMeanPass(
            input: try mean.reshaped([samples] + input.shape.dropFirst()), gradient,
            total: weights.total, on: stream)
    }

    /// The synapse's pass over B rows of the input's time mean `Σ_s c[s] x[s]` (or of an
    /// input held at every step, its own mean) and its output gradient, `total` times
    /// d loss / d the representation.
    func timeMeanPass(input: Tensor, _ gradient: Tensor, total: Float, on stream: Stream?)
        throws -> (LayerPass, Tensor)
    {
        let scaled = try input.device.allocate(gradient.shape, on: stream)
        try input.device.axpby(alpha: total, gradient, beta: 0, scaled, on: stream)
        // The synapse has no norm and the identity activation: the pass's output stands for
        // its shape only, which the gradient itself has.
        return (LayerPass(input: input, output: scaled, normalized: nil, rstd: nil), scaled)
    }
}
