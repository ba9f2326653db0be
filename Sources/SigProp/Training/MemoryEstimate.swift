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

    let config: ModelConfig
    let stages: [Stage]

    init(_ config: ModelConfig) {
        self.config = config
        stages = Self.stages(config)
    }

    static let bytesPerElement = Double(MemoryLayout<Float>.size)

    /// The stages of `config`'s network, as `Network` builds them.
    static func stages(_ config: ModelConfig) -> [Stage] {
        let classes = Double(config.classes)
        let dense = config.denseNorm != .none
        func layer(
            _ name: String, inputs: Double, outputs: Double, bias: Bool = true, norm: Bool,
            trained: Bool = true
        ) -> [ParameterSize] {
            [ParameterSize(name: "\(name).weight", elements: inputs * outputs, trained: trained)]
                + (bias
                    ? [ParameterSize(name: "\(name).bias", elements: outputs, trained: trained)]
                    : [])
                + (norm
                    ? ["norm.weight", "norm.bias"].map {
                        ParameterSize(name: "\(name).\($0)", elements: outputs, trained: trained)
                    } : [])
        }
        func dropout(_ elements: Double, last: Bool) -> Double {
            config.dropout > 0 && !last ? 2 * elements : 0
        }
        let trainedContext = !config.fixedContext
        switch config.kind {
        case .mlp:
            let width = Double(config.width)
            let features = Double(config.inputShape.reduce(1, *))
            let last = config.hiddenLayers - 1
            let first = Stage(
                parameters: layer("block0", inputs: features, outputs: width, norm: dense)
                    + layer(
                        "block0.context", inputs: classes, outputs: width, bias: false, norm: true,
                        trained: trainedContext),
                input: features, output: width, fixedSteps: dropout(width, last: last == 0),
                norm: dense)
            let hidden = (0..<max(last, 0)).map { index in
                Stage(
                    parameters: layer(
                        "block\(index + 1)", inputs: width, outputs: width, norm: dense),
                    input: width, output: width,
                    fixedSteps: dropout(width, last: index + 1 == last), norm: dense)
            }
            return [first] + hidden + [
                Stage(
                    parameters: layer("output", inputs: width, outputs: classes, norm: false),
                    input: width, output: classes, norm: false)
            ]
        case .cnn:
            let conv = config.convNorm != .none
            var channels = Double(config.inputShape[0])
            var (height, width) = (config.inputShape[1], config.inputShape[2])
            var stages: [Stage] = []
            for (index, step) in Network.cnnConvs.enumerated() {
                let positions = Double(height * width)
                let output = Double(step.channels) * positions
                if step.pool { (height, width) = (height / 2, width / 2) }
                let handedOn = Double(step.channels * height * width)
                var stage = Stage(
                    parameters: layer(
                        "block\(index)", inputs: channels * 9, outputs: Double(step.channels),
                        norm: conv),
                    input: channels * positions, output: output,
                    fixedSteps: (step.pool ? handedOn : 0) + dropout(handedOn, last: false),
                    norm: conv)
                if index == 0 {
                    stage.parameters += layer(
                        "block0.context", inputs: classes, outputs: output, bias: false,
                        norm: true, trained: trainedContext)
                }
                stages.append(stage)
                channels = Double(step.channels)
            }
            let flat = channels * Double(height * width)
            let hidden = Double(Network.cnnDense)
            return stages + [
                Stage(
                    parameters: layer(
                        "block\(Network.cnnConvs.count)", inputs: flat, outputs: hidden,
                        norm: dense),
                    input: flat, output: hidden, norm: dense),
                Stage(
                    parameters: layer("output", inputs: hidden, outputs: classes, norm: false),
                    input: hidden, output: classes, norm: false),
            ]
        }
    }

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
        let classes = Double(config.classes)
        let copied = crossing ? stage.input : 0
        guard index < stages.count - 1 else {
            // Logits, mask, dY and the one-hot labels, each B x K, and the row losses.
            return (batch * (copied + 4 * classes) + batch) * Self.bytesPerElement
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
            config.kind == .mlp
            ? "Use a smaller --width or fewer --hidden-layers" : "Use --model mlp or smaller images"
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
