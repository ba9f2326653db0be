extension Device {
    /// A block's leaky integrate-and-fire time loop (Kernels/spiking.cl), one launch:
    /// `current` is one plane [B, ...] fed at every step (direct input, the context) or T
    /// planes [T·B, ...], step-major; writes the spikes of every step ([T·B, ...]), and per
    /// (sample, unit) the representation the local loss reads (time mean of the membrane or
    /// of its surrogate) and the firing rate (spikes / T), [B, ...]; with `membrane`
    /// ([T·B, ...]) also the membrane of every step, with `stepRepresentation` ([T·B, ...])
    /// each step's value of what is averaged. The neurons' beta and threshold are `neuron`'s
    /// values on the device (`dynamics` gives the reset and the representation).
    ///
    /// With `chunk`, the launch runs only those of the T steps, and every [T·B, ...] tensor
    /// above holds only their planes: a chunk after the first starts from the membrane in
    /// `state` ([B, ...]) and adds its share to the representation and the rate; with `state`
    /// the launch leaves its last membrane there for the next chunk.
    public func lifForward(
        _ current: Tensor, dynamics: LIFDynamics, neuron: NeuronParameters,
        membrane: Tensor? = nil, spikes: Tensor, representation: Tensor, rate: Tensor,
        stepRepresentation: Tensor? = nil, chunk: Range<Int>? = nil, state: Tensor? = nil,
        on stream: Stream? = nil
    ) throws {
        let operation = "lifForward"
        try check(operation, current, spikes, representation, rate)
        let plane = representation.count
        try requireSteps(operation, dynamics.steps)
        let chunk = chunk ?? 0..<dynamics.steps
        guard !chunk.isEmpty, chunk.lowerBound >= 0, chunk.upperBound <= dynamics.steps else {
            throw SigPropError.configuration(
                "\(operation): steps \(chunk) are not a run of the \(dynamics.steps) steps")
        }
        if let state {
            try check(operation, state)
            try requireCount(operation, state, plane)
        } else if chunk.lowerBound > 0 {
            throw SigPropError.configuration(
                "\(operation): steps from \(chunk.lowerBound) go on from the membrane of the steps "
                    + "before; pass the state the chunk before left")
        }
        let steps = chunk.count
        guard current.count == plane || current.count == steps * plane else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "a current of \(current.shape) is neither one plane of \(plane) values nor "
                    + "\(steps) of them")
        }
        try requireCount(operation, rate, plane)
        try requireCount(operation, spikes, steps * plane)
        if let membrane {
            try check(operation, membrane)
            try requireCount(operation, membrane, steps * plane)
        }
        if let stepRepresentation {
            try check(operation, stepRepresentation)
            try requireCount(operation, stepRepresentation, steps * plane)
        }
        try backend.lifForward(
            dynamics, plane: plane, constantCurrent: current.count == plane && steps > 1,
            current: current.storage, membrane: membrane?.storage, spikes: spikes.storage,
            representation: representation.storage, rate: rate.storage,
            stepRepresentation: stepRepresentation?.storage, neuron: try storage(operation, neuron),
            steps: chunk, state: state?.storage, on: try queue(stream, operation))
    }

    /// d loss / d current from d loss / d representation (one plane, or one per step for a
    /// loss at every step), given the `spikes` of `lifForward` and, where the gradient reads
    /// it (`LIFDynamics.gradientReadsMembrane`), its `membrane`: the reverse scan of the
    /// membrane recurrence with the reset held constant. A one-plane `currentGradient`
    /// (a constant current) gets the sum over steps. With `neuronPartials` ([entries, 2],
    /// which needs the membrane) also each (sample, unit)'s share of d loss / d beta and
    /// d loss / d threshold.
    public func lifBackward(
        membrane: Tensor? = nil, spikes: Tensor, representationGradient: Tensor,
        dynamics: LIFDynamics, neuron: NeuronParameters, into currentGradient: Tensor,
        neuronPartials: Tensor? = nil, on stream: Stream? = nil
    ) throws {
        let operation = "lifBackward"
        try check(operation, spikes, representationGradient, currentGradient)
        let steps = dynamics.steps
        try requireSteps(operation, steps)
        let plane = spikes.count / steps
        try requireCount(operation, spikes, steps * plane)
        if let membrane {
            try check(operation, membrane)
            try requireCount(operation, membrane, steps * plane)
        } else if dynamics.gradientReadsMembrane || neuronPartials != nil {
            throw SigPropError.configuration(
                "\(operation): a surrogate's gradient and beta's read every step's membrane; "
                    + "pass the membrane lifForward wrote")
        }
        if let neuronPartials {
            try check(operation, neuronPartials)
            try requireCount(operation, neuronPartials, 2 * plane)
        }
        for (tensor, what) in [
            (representationGradient, "representation gradient"),
            (currentGradient, "current gradient"),
        ] where tensor.count != plane && tensor.count != steps * plane {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "the \(what) \(tensor.shape) is neither one plane of \(plane) values nor "
                    + "\(steps) of them")
        }
        try backend.lifBackward(
            dynamics, plane: plane,
            constantCurrent: currentGradient.count == plane && steps > 1,
            perStep: representationGradient.count == steps * plane && steps > 1,
            membrane: membrane?.storage, spikes: spikes.storage,
            gradient: representationGradient.storage, currentGradient: currentGradient.storage,
            neuron: try storage(operation, neuron), neuronPartials: neuronPartials?.storage,
            on: try queue(stream, operation))
    }

    /// The gradient a surrogate's representation passes to each of a chunk's steps:
    /// `out[t] = weight[t] · r'(membrane[t] − θ) ⊙ gradient`, with `membrane` and `out` the
    /// chunk's planes ([count·B, ...]), `gradient` d loss / d the representation ([B, ...]) and
    /// `weight` one value per step ([count]). Used where a chunk is recomputed to learn
    /// (docs/spiking.md, memory and `T`).
    public func lifSurrogateGradient(
        membrane: Tensor, representationGradient gradient: Tensor, stepWeights weight: Tensor,
        dynamics: LIFDynamics, neuron: NeuronParameters, into out: Tensor,
        on stream: Stream? = nil
    ) throws {
        let operation = "lifSurrogateGradient"
        try check(operation, membrane, gradient, weight, out)
        guard dynamics.surrogate != nil else {
            throw SigPropError.configuration(
                "\(operation): the voltage has no surrogate; its gradient is d loss / d R itself")
        }
        let (plane, count) = (gradient.count, weight.count)
        try requireCount(operation, membrane, count * plane)
        try requireCount(operation, out, count * plane)
        try backend.lifSurrogateGradient(
            dynamics, count: count, plane: plane, membrane: membrane.storage,
            gradient: gradient.storage, weight: weight.storage, into: out.storage,
            neuron: try storage(operation, neuron), on: try queue(stream, operation))
    }

    /// The images [B, ...] (pixels in 0...1) as `steps` planes of spikes into `trains`
    /// ([T·B, ...], step-major) by `encoding` (Kernels/spiking.cl's spike_encode); `seed`
    /// fixes a rate encoding's draws, the same on every backend. With `chunk`, only those
    /// steps' planes, the same as the whole train's.
    public func spikeEncode(
        _ images: Tensor, encoding: SpikeEncoding, steps: Int, seed: UInt32,
        chunk: Range<Int>? = nil, into trains: Tensor, on stream: Stream? = nil
    ) throws {
        let operation = "spikeEncode"
        try check(operation, images, trains)
        try requireSteps(operation, steps)
        let chunk = chunk ?? 0..<steps
        guard !chunk.isEmpty, chunk.lowerBound >= 0, chunk.upperBound <= steps else {
            throw SigPropError.configuration(
                "\(operation): steps \(chunk) are not a run of the \(steps) steps")
        }
        guard encoding != .direct else {
            throw SigPropError.configuration(
                "\(operation): the direct encoding feeds the image itself; nothing to encode")
        }
        try requireCount(operation, trains, chunk.count * images.count)
        try backend.spikeEncode(
            encoding, steps: steps, chunk: chunk, plane: images.count, seed: seed,
            images: images.storage, trains: trains.storage, on: try queue(stream, operation))
    }

    private func storage(_ operation: String, _ neuron: NeuronParameters) throws
        -> NeuronStorage
    {
        try check(operation, neuron.beta, neuron.threshold)
        return NeuronStorage(beta: neuron.beta.storage, threshold: neuron.threshold.storage)
    }

    private func requireSteps(_ operation: String, _ steps: Int) throws {
        guard steps >= 1 else {
            throw SigPropError.configuration("\(operation): \(steps) time steps; give at least 1")
        }
    }
}
