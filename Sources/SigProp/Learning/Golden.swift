import Foundation

/// A tensor of a reference-vector file: shape and row-major values.
public struct GoldenTensor: Sendable {
    public let shape: [Int]
    public let values: [Float]
}

/// One reference-vector file (format: docs/golden-vectors.md), computed by the authors'
/// PyTorch library.
package struct GoldenCase: Sendable {
    public let name: String
    public let kind: String
    public let inputs: [String: GoldenTensor]
    public let outputs: [String: GoldenTensor]
    /// Output name -> flat indices of Adam results whose reference gradient is a cancellation
    /// residue (0 < |g| < 1e-6): noise in the reference, compared with absolute tolerance lr.
    public let adamIllConditioned: [String: [Int]]

    /// The SGD step of cases that give one in `config.sgd` (rate, momentum, weight decay).
    public let sgd: (learningRate: Float, momentum: Float, weightDecay: Float)?
    /// The file's `config` object as JSON, for the checks that read more of it.
    public let config: Data?

    public init(
        name: String, kind: String, inputs: [String: GoldenTensor], outputs: [String: GoldenTensor],
        adamIllConditioned: [String: [Int]] = [:],
        sgd: (learningRate: Float, momentum: Float, weightDecay: Float)? = nil
    ) {
        self.name = name
        self.kind = kind
        self.inputs = inputs
        self.outputs = outputs
        self.adamIllConditioned = adamIllConditioned
        self.sgd = sgd
        config = nil
    }

    public init(contentsOf url: URL) throws {
        let path = url.path
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SigPropError.badGoldenFile(
                path: path, reason: "cannot be read (\(error.localizedDescription))")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SigPropError.badGoldenFile(path: path, reason: "is not a JSON object")
        }
        guard let name = object["name"] as? String, let kind = object["kind"] as? String,
            let inputs = object["inputs"] as? [String: Any],
            let outputs = object["outputs"] as? [String: Any]
        else {
            throw SigPropError.badGoldenFile(
                path: path, reason: "lacks one of the fields name, kind, inputs, outputs")
        }
        func tensors(_ fields: [String: Any]) throws -> [String: GoldenTensor] {
            try fields.mapValues { value in
                guard let tensor = value as? [String: Any], let shape = tensor["shape"] as? [Int],
                    let data = tensor["data"] as? [Double],
                    data.count == shape.reduce(1, *)
                else {
                    throw SigPropError.badGoldenFile(
                        path: path,
                        reason: "a tensor is not {shape, dtype, data} with prod(shape) entries")
                }
                return GoldenTensor(shape: shape, values: data.map { Float($0) })
            }
        }
        self.name = name
        self.kind = kind
        self.inputs = try tensors(inputs)
        self.outputs = try tensors(outputs)
        let ill = object["adam_ill_conditioned"] as? [String: Any]
        self.adamIllConditioned = (ill?["indices"] as? [String: [Int]]) ?? [:]
        config = try (object["config"] as? [String: Any]).map {
            try JSONSerialization.data(withJSONObject: $0)
        }
        let sgd = (object["config"] as? [String: Any])?["sgd"] as? [String: Any]
        if let sgd, let rate = sgd["lr"] as? Double, let momentum = sgd["momentum"] as? Double {
            self.sgd = (
                Float(rate), Float(momentum), Float(sgd["weight_decay"] as? Double ?? 0)
            )
        } else {
            self.sgd = nil
        }
    }

    func input(_ key: String) throws -> GoldenTensor {
        guard let tensor = inputs[key] else {
            throw SigPropError.badGoldenFile(path: name, reason: "input '\(key)' is missing")
        }
        return tensor
    }

    func output(_ key: String) throws -> GoldenTensor {
        guard let tensor = outputs[key] else {
            throw SigPropError.badGoldenFile(path: name, reason: "output '\(key)' is missing")
        }
        return tensor
    }
}

/// One output compared with its reference.
package struct GoldenComparison: Sendable {
    public let output: String
    public let maxAbsoluteError: Float
    public let tolerance: Float
    public var passed: Bool { maxAbsoluteError <= tolerance }
}

package struct GoldenReport: Sendable {
    public let name: String
    public let comparisons: [GoldenComparison]
    public var passed: Bool { !comparisons.isEmpty && comparisons.allSatisfy(\.passed) }
    public var summary: String {
        comparisons.map {
            String(
                format: "%@ %.2g%@", $0.output, $0.maxAbsoluteError,
                $0.passed ? "" : " (> \($0.tolerance))")
        }
        .joined(separator: ", ")
    }
}

/// Runs a reference case through a device and compares every output.
package enum GoldenCheck {
    /// The tolerance for losses, products and gradients (docs/golden-vectors.md):
    /// 1e-5 * max(1, max |ref|).
    static func tolerance(_ reference: GoldenTensor) -> Float {
        1e-5 * max(1, reference.values.map(abs).max() ?? 0)
    }

    public static func run(path: String, on device: Device) throws -> GoldenReport {
        try run(GoldenCase(contentsOf: URL(fileURLWithPath: path)), on: device)
    }

    public static func run(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        switch golden.kind {
        case "loss":
            return try checkLoss(golden, on: device)
        case "layer_linear", "layer_conv":
            return try checkLayer(golden, on: device)
        case "layer_adam_steps":
            return try checkAdamSteps(golden, on: device)
        case "signal":
            return try checkSignal(golden, on: device)
        case "forward_forward":
            return try checkForwardForward(golden, on: device)
        case "pepita":
            return try checkPEPITA(golden, on: device)
        case "efp":
            return try checkErrorForward(golden, on: device)
        case "snn":
            return try checkSpiking(golden, on: device)
        default:
            throw SigPropError.badGoldenFile(
                path: golden.name,
                reason:
                    "unknown kind '\(golden.kind)' (known: loss, layer_linear, layer_conv, "
                    + "layer_adam_steps, signal, forward_forward, pepita, efp, snn)"
            )
        }
    }

    /// The reference's step settings: Adam at its defaults (fresh state), plain SGD lr 0.1.
    static var adamSettings: OptimizerSettings { OptimizerSettings() }
    static var sgdSettings: OptimizerSettings {
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.learningRate = 0.1
        settings.momentum = 0
        return settings
    }

    /// The block the file describes (Linear or Conv2d 3x3 pad 1, optional LayerNorm, LeakyReLU),
    /// with its initial parameters; `names` are the PyTorch names in `parameters` order.
    static func makeLayer(_ golden: GoldenCase, on device: Device) throws -> (
        FeatureLayer, names: [String]
    ) {
        let weight = try golden.input("init.0.weight")
        var generator = SeededGenerator(seed: 0)
        let layer: FeatureLayer
        var names = ["0.weight", "0.bias"]
        if golden.kind == "layer_conv" {
            layer = try ConvLayer(
                device: device, name: "golden", inChannels: weight.shape[1],
                outChannels: weight.shape[0],
                kernelSize: weight.shape[2], padding: weight.shape[2] / 2, norm: .none,
                activation: .leakyRelu,
                generator: &generator)
        } else {
            let norm: NormKind = golden.inputs["init.1.weight"] == nil ? .none : .layer
            if norm == .layer { names += ["1.weight", "1.bias"] }
            layer = try DenseLayer(
                device: device, name: "golden", inputs: weight.shape[1], outputs: weight.shape[0],
                norm: norm,
                activation: .leakyRelu, generator: &generator)
        }
        try load(layer.parameters, names: names, prefix: "init.", from: golden, on: device)
        return (layer, names)
    }

    static func load(
        _ parameters: [Parameter], names: [String], prefix: String, from golden: GoldenCase,
        on device: Device
    ) throws {
        for (parameter, name) in zip(parameters, names) {
            let values = try golden.input(prefix + name)
            guard values.values.count == parameter.value.count else {
                throw SigPropError.badGoldenFile(
                    path: golden.name,
                    reason:
                        "\(prefix + name) has shape \(values.shape), the block's "
                        + "\(parameter.name) is \(parameter.value.shape)"
                )
            }
            try device.write(values.values, to: parameter.value)
        }
    }

    /// Compares an optimizer result. An ill-conditioned Adam entry's gradient is a cancellation
    /// residue (|g| < 1e-6, docs/golden-vectors.md), so its sign, and the sign of its step of up to
    /// lr, is rounding noise: another summation order (a GPU's) can flip it. It
    /// must only lie within one step of the reference's either way, 2 lr.
    static func compareStep(
        _ output: String, _ got: [Float], _ golden: GoldenCase, learningRate: Float
    ) throws -> GoldenComparison {
        let reference = try golden.output(output)
        let skipped = Set(golden.adamIllConditioned[output] ?? [])
        guard got.count == reference.values.count else {
            return GoldenComparison(output: output, maxAbsoluteError: .infinity, tolerance: 1e-6)
        }
        var worst: Float = 0
        for (index, (a, b)) in zip(got, reference.values).enumerated() {
            let error = abs(a - b)
            if skipped.contains(index) {
                if !(error <= 2 * learningRate) { worst = .infinity }
            } else {
                worst = max(worst, error.isNaN ? .infinity : error)
            }
        }
        return GoldenComparison(output: output, maxAbsoluteError: worst, tolerance: 1e-6)
    }

    static func checkLayer(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let h0 = try golden.input("h0")
        let t0 = try golden.input("t0")
        var comparisons: [GoldenComparison] = []
        for (optimizerName, settings) in [("adam", adamSettings), ("sgd", sgdSettings)] {
            let (layer, names) = try makeLayer(golden, on: device)
            let block = try HiddenBlock(layer: layer, after: [], optimizer: settings)
            let step = try block.train(
                h: try device.tensor(h0.values, shape: h0.shape),
                t: try device.tensor(t0.values, shape: t0.shape),
                loss: LocalLoss(), learningRate: settings.learningRate, storingGradients: true,
                on: nil)
            if optimizerName == "adam" {
                comparisons += try forwardComparisons(step, golden, on: device)
                for (parameter, name) in zip(layer.parameters, names) {
                    comparisons.append(
                        compare(
                            "grad." + name, try device.read(parameter.gradient),
                            try golden.output("grad." + name)))
                }
            }
            for (parameter, name) in zip(layer.parameters, names) {
                comparisons.append(
                    try compareStep(
                        "\(optimizerName).\(name)", try device.read(parameter.value), golden,
                        learningRate: settings.learningRate))
            }
        }
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    static func forwardComparisons(_ step: BlockStep, _ golden: GoldenCase, on device: Device)
        throws -> [GoldenComparison]
    {
        [
            compare("loss", [try LocalLoss.value(of: step.loss)], try golden.output("loss")),
            compare("h1", try device.read(step.h), try golden.output("h1")),
            compare("t1", try device.read(step.t), try golden.output("t1")),
            compare("y", try device.read(step.loss.y), try golden.output("y")),
            compare("yy", try device.read(step.loss.yy), try golden.output("yy")),
            compare(
                "mask", try device.read(step.loss.mask), try golden.output("mask"), tolerance: 0),
        ]
    }

    static func checkAdamSteps(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let (layer, names) = try makeLayer(golden, on: device)
        let block = try HiddenBlock(layer: layer, after: [], optimizer: adamSettings)
        var comparisons: [GoldenComparison] = []
        for s in 0..<3 {
            let h0 = try golden.input("step\(s).h0")
            let t0 = try golden.input("step\(s).t0")
            let step = try block.train(
                h: try device.tensor(h0.values, shape: h0.shape),
                t: try device.tensor(t0.values, shape: t0.shape),
                loss: LocalLoss(), learningRate: adamSettings.learningRate, storingGradients: true,
                on: nil)
            comparisons.append(
                compare(
                    "step\(s).loss", [try LocalLoss.value(of: step.loss)],
                    try golden.output("step\(s).loss")))
            for (parameter, name) in zip(layer.parameters, names) {
                comparisons.append(
                    compare(
                        "step\(s).grad.\(name)", try device.read(parameter.gradient),
                        try golden.output("step\(s).grad.\(name)")))
                comparisons.append(
                    try compareStep(
                        "step\(s).\(name)", try device.read(parameter.value), golden,
                        learningRate: adamSettings.learningRate))
            }
        }
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    static func checkSignal(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let x = try golden.input("x")
        let labels = try golden.input("labels")
        let inputWeight = try golden.input("init.1.module_input.0.weight")
        let contextWeight = try golden.input("init.1.module_context.0.weight")
        let classes = contextWeight.shape[1]
        var onehotValues = [Float](repeating: 0, count: labels.values.count * classes)
        for (row, label) in labels.values.enumerated() {
            onehotValues[row * classes + Int(label)] = 1
        }
        let names = [
            "1.module_input.0.weight", "1.module_input.0.bias", "1.module_context.0.weight",
            "1.module_context.1.weight", "1.module_context.1.bias",
        ]
        var comparisons: [GoldenComparison] = []
        for (optimizerName, settings) in [("adam", adamSettings), ("sgd", sgdSettings)] {
            var generator = SeededGenerator(seed: 0)
            let input = try DenseLayer(
                device: device, name: "input", inputs: inputWeight.shape[1],
                outputs: inputWeight.shape[0],
                activation: .leakyRelu, generator: &generator)
            let context = try DenseLayer(
                device: device, name: "context", inputs: classes, outputs: contextWeight.shape[0],
                bias: false,
                norm: .layer, activation: .relu, generator: &generator)
            let block = try SignalBlock(
                input: input, context: context, after: [], outputShape: [1, inputWeight.shape[0]],
                optimizer: settings)
            let parameters = block.optimizer.parameters
            try load(parameters, names: names, prefix: "init.", from: golden, on: device)
            let step = try block.train(
                x: try device.tensor(x.values, shape: x.shape),
                context: try device.tensor(onehotValues, shape: [labels.values.count, classes]),
                loss: LocalLoss(), learningRate: settings.learningRate, storingGradients: true,
                on: nil)
            if optimizerName == "adam" {
                comparisons += try forwardComparisons(step, golden, on: device)
                for (parameter, name) in zip(parameters, names) {
                    comparisons.append(
                        compare(
                            "grad." + name, try device.read(parameter.gradient),
                            try golden.output("grad." + name)))
                }
            }
            for (parameter, name) in zip(parameters, names) {
                comparisons.append(
                    try compareStep(
                        "\(optimizerName).\(name)", try device.read(parameter.value), golden,
                        learningRate: settings.learningRate))
            }
        }
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    static func compare(
        _ name: String, _ got: [Float], _ reference: GoldenTensor, tolerance: Float? = nil
    ) -> GoldenComparison {
        let error =
            got.count == reference.values.count
            ? zip(got, reference.values).map {
                $0.isNaN || $1.isNaN ? Float.infinity : abs($0 - $1)
            }.max() ?? 0
            : .infinity
        return GoldenComparison(
            output: name, maxAbsoluteError: error, tolerance: tolerance ?? Self.tolerance(reference)
        )
    }

    /// A parameter's value and its momentum buffer against `final.<name>` and
    /// `final.<name>.momentum_buffer`. A momentum buffer sums every step's gradient, each with
    /// its float rounding: 1e-4 * max(1, max |ref|).
    static func compareWithMomentum(
        _ name: String, value: [Float], momentum: [Float], _ golden: GoldenCase
    ) throws -> [GoldenComparison] {
        let buffer = try golden.output(name + ".momentum_buffer")
        return [
            compare(name, value, try golden.output(name)),
            compare(
                name + ".momentum_buffer", momentum, buffer,
                tolerance: 1e-4 * max(1, buffer.values.map(abs).max() ?? 0)),
        ]
    }

    /// `parameter`'s value and momentum buffer, as above.
    static func compareWithMomentum(
        _ name: String, _ parameter: Parameter, _ golden: GoldenCase
    ) throws -> [GoldenComparison] {
        let device = parameter.value.device
        return try compareWithMomentum(
            name, value: try device.read(parameter.value),
            momentum: try device.read(parameter.state["momentum"] ?? parameter.value), golden)
    }

    /// The output readout's predictions for the last step's samples of `x` ([steps, B, D])
    /// against the reference's `predictions`, exactly.
    static func compareOutputPredictions(
        _ network: Network, _ x: GoldenTensor, _ golden: GoldenCase
    ) throws -> GoldenComparison {
        let predictions = try network.predictor()(slice(x, x.shape[0] - 1), x.shape[1])
        return compare(
            "predictions", (predictions["output"] ?? []).map(Float.init),
            try golden.output("predictions"), tolerance: 0)
    }

    /// One training step of `batch` through every stage of `network` on `stream`, as the
    /// pipeline runs it; `each` sees every stage's pass and the sum of its row losses.
    static func trainStep(
        _ network: Network, _ batch: BatchContext, on stream: Stream,
        each: (_ stage: Int, _ pass: StagePass, _ loss: Float) throws -> Void
    ) throws {
        var handedOn: [Tensor] = []
        for (index, stage) in network.stages.enumerated() {
            let pass = try stage.forward(handedOn, batch: batch, on: stream)
            let loss = try stream.device.read(try pass.learn(stream), on: stream).reduce(0, +)
            try each(index, pass, loss)
            handedOn = pass.outputs
        }
    }

    static func checkLoss(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let h1 = try golden.input("h1")
        let t1 = try golden.input("t1")
        let t0 = try golden.input("t0")
        let output = try LocalLoss().evaluate(
            h: try device.tensor(h1.values, shape: h1.shape),
            t: try device.tensor(t1.values, shape: t1.shape),
            t0: try device.tensor(t0.values, shape: t0.shape))
        let loss = try LocalLoss.value(of: output)
        return GoldenReport(
            name: golden.name,
            comparisons: [
                compare("loss", [loss], try golden.output("loss")),
                compare("y", try device.read(output.y), try golden.output("y")),
                compare("yy", try device.read(output.yy), try golden.output("yy")),
                compare(
                    "mask", try device.read(output.mask), try golden.output("mask"), tolerance: 0),
                compare("dloss_dh1", try device.read(output.dH), try golden.output("dloss_dh1")),
                compare("dloss_dt1", try device.read(output.dT), try golden.output("dloss_dt1")),
            ])
    }
}
