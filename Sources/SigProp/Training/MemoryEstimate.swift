import Foundation

/// The memory a network takes, worked out from its description before anything is allocated
/// and checked against each device's (`DeviceMemory`): the parameters with their gradients and
/// optimizer state when the network is built, one training batch's activations times the
/// batches in flight when a trainer is made. What cannot fit is refused with the figures and
/// the flag to change, instead of failing in an allocator part-way through.
///
/// Sizes are in elements, as `Double` (a width of 10^9 squares past `Int`). Activations count
/// the tensors a training batch allocates (docs/signal-propagation.md's two streams, the local
/// loss's B x B matrices, the gradients): a floor, the convolutions' scratch is left out.
struct MemoryEstimate {
    /// One parameter tensor.
    struct ParameterSize {
        let name: String
        let elements: Double
        /// Whether an optimizer steps it (a fixed context keeps a gradient but no state).
        let trained: Bool
    }

    /// One stage (a learning block or the output layer): its parameters and the sizes per
    /// sample of what it reads and writes.
    struct Stage {
        var parameters: [ParameterSize]
        /// Elements per sample of the stage's input and of its layer's output.
        var input: Double
        var output: Double
        /// Elements per sample per stream that its fixed steps write (a pool's output, a
        /// dropout's mask and output).
        var fixedSteps: Double = 0
        var norm: Bool
    }

    /// The shape of training: samples per batch, rows of the target stream (the batch, or the
    /// classes with the K-row shortcut) and batches in flight.
    struct Batches {
        var size: Int
        var targetRows: Int
        var inFlight: Int
    }

    let plan: NetworkPlan
    let stages: [Stage]

    init(_ plan: NetworkPlan) {
        self.plan = plan
        let spiking = plan.description.spiking
        // Steps whose planes are held at once: a chunk's under `--time-chunk`.
        let steps = plan.isSpiking ? Double(spiking.chunks.first?.count ?? 1) : 1
        let encoded = plan.isSpiking && spiking.encoding != .direct
        stages = plan.stages.enumerated().map { index, stage in
            // What the fixed steps write per sample: a pool's output, a dropout's mask and
            // output (flatten is a view).
            var shape = stage.outputShape
            var written = 0
            for step in stage.after {
                switch step {
                case .pool(_, let size, let ceil):
                    shape = [
                        shape[0], PoolShape.outputLength(shape[1], size: size, ceil: ceil),
                        PoolShape.outputLength(shape[2], size: size, ceil: ceil),
                    ]
                    written += shape.reduce(1, *)
                case .dropout: written += 2 * shape.reduce(1, *)
                case .flatten: break
                }
            }
            // A spiking block reads a spike train (every block but the first, whose image is
            // the same at every step unless it is encoded as spikes). Per output it writes,
            // at every step, its spikes, its membrane where the gradient reads it (a
            // surrogate, learned neurons), each step's values and their gradient where the loss is taken at
            // every step; its current and the current's gradient at every step (once for a
            // constant current); and four planes: the representation, the rate and their
            // gradients. In all, a count of planes over the 3 this estimate counts per output.
            let constantCurrent = index == 0 && !encoded
            let trains =
                1
                + (spiking.learning == .surrogate || spiking.learnBeta || spiking.learnThreshold
                    ? 1.0 : 0)
                + (spiking.lossTiming == .step ? 2 : 0)
            let currents = constantCurrent ? 2 : 2 * steps
            // Under --time-chunk a surrogate's block runs each chunk again to learn: its spikes,
            // membrane and each step's gradient once more, the representation and rate as
            // scratch, and its input's leaky mean at each step of the chunk.
            let perOutput =
                Double(stage.inputShape.reduce(1, *)) / Double(stage.outputShape.reduce(1, *))
            let again =
                spiking.timeChunk != nil && spiking.learning == .surrogate
                ? 3 * steps + 2 + (constantCurrent ? 0 : perOutput * steps) : 0
            let (reads, writes) =
                stage.spiking && index < plan.blockCount
                ? (constantCurrent ? 1 : steps, (trains * steps + currents + 4 + again) / 3)
                : (1, 1)
            return Stage(
                parameters: stage.parameters.map {
                    ParameterSize(name: $0.name, elements: Double($0.elements), trained: $0.trained)
                },
                input: Double(stage.inputShape.reduce(1, *)) * reads,
                output: Double(stage.outputShape.reduce(1, *)) * writes,
                fixedSteps: Double(written) * (stage.spiking ? steps : 1),
                norm: stage.norm != .none)
        }
    }

    static let bytesPerElement = Double(MemoryLayout<Float>.size)

    /// Tensors per trained parameter: the value, its gradient and the optimizer's state.
    static func tensorsPerParameter(_ optimizer: OptimizerSettings) -> Double {
        switch optimizer.kind {
        case .adam: 4
        case .amsgrad: 5
        case .sgd: optimizer.momentum == 0 ? 2 : 3
        }
    }

    /// Bytes of `stage`'s parameters with their gradients and optimizer state.
    func parameterBytes(_ stage: Stage, optimizer: OptimizerSettings) -> Double {
        stage.parameters.reduce(0) { sum, parameter in
            sum + parameter.elements * (parameter.trained ? Self.tensorsPerParameter(optimizer) : 2)
        } * Self.bytesPerElement
    }

    /// Bytes one training batch allocates on stage `index`'s device (`crossing`: its input
    /// arrives from another device and is copied in).
    func activationBytes(_ index: Int, batches: Batches, crossing: Bool) -> Double {
        let stage = stages[index]
        let batch = Double(batches.size)
        let classes = Double(plan.classes)
        let copied = crossing ? stage.input : 0
        guard index < stages.count - 1 else {
            // Logits, mask, dY and the one-hot labels, each B x K, and the row losses; a
            // spiking output layer's current, spikes and current gradient at every step, and
            // its rate.
            let steps = plan.isSpiking ? Double(plan.description.spiking.chunks[0].count) : 0
            let spikingPlanes = plan.isSpiking ? 3 * steps + 1 : 0
            return (batch * (copied + (4 + spikingPlanes) * classes) + batch)
                * Self.bytesPerElement
        }
        let rows = batch + Double(batches.targetRows)
        // Per stream: the layer's output, d output, d loss / d output, and with a norm its
        // normalised values and their product with the gradient.
        var elements = rows * (stage.output * (stage.norm ? 5 : 3) + stage.fixedSteps + copied)
        // The local loss: Y, YY, the mask and dY (B x B) and the row losses; by class, the
        // B x K and K x K products behind them.
        elements += 4 * batch * batch + batch
        if batches.targetRows != batches.size {
            elements += 3 * batch * classes + classes * classes
        }
        // The signal block also holds the batch's images and one-hot labels.
        if index == 0 { elements += batch * stage.input + rows * classes }
        return elements * Self.bytesPerElement
    }

    /// The largest single tensor of `stage` with `batch` samples: (what, bytes).
    func largestTensor(_ stage: Stage, batch: Int?) -> (String, Double) {
        let parameter = stage.parameters.max { $0.elements < $1.elements }
        var largest = (parameter?.name ?? "", (parameter?.elements ?? 0) * Self.bytesPerElement)
        if let batch {
            let rows = Double(batch)
            for (name, elements) in [
                ("a batch's activations", rows * max(stage.input, stage.output)),
                ("the local loss's B x B matrices", rows * rows),
            ] where elements * Self.bytesPerElement > largest.1 {
                largest = (name, elements * Self.bytesPerElement)
            }
        }
        return largest
    }

    /// Refuses parameters that cannot fit on the devices of `stageDevices` (one per stage),
    /// before any is allocated.
    func checkParameters(on stageDevices: [Device], optimizer: OptimizerSettings) throws {
        let state: String
        switch optimizer.kind {
        case .adam: state = "Adam's two state tensors"
        case .amsgrad: state = "AMSGrad's three state tensors"
        case .sgd: state = optimizer.momentum == 0 ? "no optimizer state" : "SGD's momentum"
        }
        let smaller =
            plan.description.preset == "mlp"
            ? "Use a smaller --width or fewer --hidden-layers"
            : "Use a smaller --width-multiplier or a smaller --model"
        try check(
            on: stageDevices, what: "the model",
            contents: "its parameters, with their gradients and \(state),",
            fix: smaller + ", or spread the blocks over more devices with memory of their own "
                + "(SIGPROP_DEVICE=0,1; see `swift run doctor`).",
            tensorFix: smaller + ".", batch: nil
        ) { index, _ in parameterBytes(stages[index], optimizer: optimizer) }
    }

    /// Refuses training batches whose activations cannot fit next to the parameters (which
    /// exist by now: the devices' free memory is what is left).
    func checkActivations(on stageDevices: [Device], batches: Batches) throws {
        let fix =
            "Use a smaller --batch-size or --pipeline-depth (batches in flight; "
            + "--schedule sequential runs one), or a smaller model."
        try check(
            on: stageDevices, what: "training",
            contents: "\(batches.inFlight) batches of \(batches.size) in flight", fix: fix,
            tensorFix: "Use a smaller --batch-size.", batch: batches.size
        ) { index, crossing in
            activationBytes(index, batches: batches, crossing: crossing)
                * Double(batches.inFlight)
        }
    }

    /// Parameters and activations per memory pool, in stage order.
    func needs(on stageDevices: [Device], optimizer: OptimizerSettings, batches: Batches)
        -> [MemoryNeed]
    {
        var pools: [(memory: DeviceMemory, devices: [Device], parameters: Double, active: Double)] =
            []
        for (index, device) in stageDevices.enumerated() {
            let memory = device.memory
            let crossing = index > 0 && stageDevices[index - 1] !== device
            var slot = pools.firstIndex { $0.memory.pool == memory.pool }
            if slot == nil {
                pools.append((memory, [], 0, 0))
                slot = pools.count - 1
            }
            let at = slot!
            if !pools[at].devices.contains(where: { $0 === device }) {
                pools[at].devices.append(device)
            }
            pools[at].parameters += parameterBytes(stages[index], optimizer: optimizer)
            pools[at].active +=
                activationBytes(index, batches: batches, crossing: crossing)
                * Double(batches.inFlight)
        }
        return pools.map {
            MemoryNeed(
                devices: $0.devices.map(\.description).joined(separator: " and "),
                parameterBytes: $0.parameters, activationBytes: $0.active,
                freeBytes: $0.memory.freeBytes)
        }
    }

    /// Sums `bytes(stage, crossing)` over the stages of each memory pool and compares it with
    /// the pool's free memory; compares every stage's largest tensor with its device's
    /// largest allocation. `fix` and `tensorFix`: what to tell the user in either case.
    private func check(
        on stageDevices: [Device], what: String, contents: String, fix: String,
        tensorFix: String, batch: Int?, bytes: (Int, Bool) -> Double
    ) throws {
        var needs: [String: (bytes: Double, memory: DeviceMemory, devices: [Device])] = [:]
        var order: [String] = []
        for (index, device) in stageDevices.enumerated() {
            let memory = device.memory
            let crossing = index > 0 && stageDevices[index - 1] !== device
            let (name, largest) = largestTensor(stages[index], batch: batch)
            if let limit = memory.largestAllocationBytes, largest > Double(limit) {
                throw SigPropError.doesNotFit(
                    what: "\(what) does not fit: \(name) needs \(Self.format(largest)) "
                        + "in one buffer on \(device.description)",
                    limit: "which allows single buffers up to \(formatBytes(limit)) "
                        + "(CL_DEVICE_MAX_MEM_ALLOC_SIZE)", fix: tensorFix)
            }
            if needs[memory.pool] == nil {
                order.append(memory.pool)
                needs[memory.pool] = (0, memory, [])
            }
            needs[memory.pool]!.bytes += bytes(index, crossing)
            if !needs[memory.pool]!.devices.contains(where: { $0 === device }) {
                needs[memory.pool]!.devices.append(device)
            }
        }
        for pool in order {
            let (need, memory, devices) = needs[pool]!
            guard need > Double(memory.freeBytes) else { continue }
            throw SigPropError.doesNotFit(
                what: "\(what) does not fit: \(contents) need \(Self.format(need)) on "
                    + devices.map(\.description).joined(separator: " and "),
                limit: "which has \(formatBytes(memory.freeBytes)) free (\(memory.source))",
                fix: fix)
        }
    }

    /// `formatBytes` for a figure that may pass `UInt64`.
    static func format(_ bytes: Double) -> String {
        bytes < 0x1p64 ? formatBytes(UInt64(bytes)) : String(format: "%.3g bytes", bytes)
    }
}
