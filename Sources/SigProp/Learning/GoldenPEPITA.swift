import Foundation

/// PEPITA's reference vectors (`kind: pepita`, written by Benchmarks/reference/pepita_golden.py):
/// three training steps of a small network from the reference's weights and feedback matrix,
/// or with weight mirroring (`config.mirror`) from its feedback factors and mirroring noise.
extension GoldenCheck {
    /// Every step's error and clean cross entropy (with mirroring, F as composed), then every
    /// weight and momentum buffer (and factor), and the clean pass's predictions on the last
    /// step's samples.
    static func checkPEPITA(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let x = try golden.input("x")
        let (steps, batch, features) = (x.shape[0], x.shape[1], x.shape[2])
        let layerCount = golden.inputs.keys.filter { $0.hasPrefix("init.layers.") }.count
        let weights = try (0..<layerCount).map { try golden.input("init.layers.\($0).weight") }
        let classes = weights[layerCount - 1].shape[0]
        guard let sgd = golden.sgd else {
            throw SigPropError.badGoldenFile(path: golden.name, reason: "config.sgd is missing")
        }
        var settings = LearningRule.pepitaOptimizer
        settings.learningRate = sgd.learningRate
        settings.momentum = sgd.momentum
        settings.weightDecay = sgd.weightDecay
        settings.milestones = []
        let mirror = try mirroring(golden)
        let network = try Network(
            NetworkDescription(
                layers: weights.dropLast().map { NetworkDescription.Layer.dense($0.shape[0]) }),
            inputShape: [1, 1, features], classes: classes, device: device,
            optimizer: settings, seed: 1,
            rule: LearningRule(.pepita, feedbackScale: mirror?.scale, mirroring: mirror?.settings))
        for (index, layer) in network.pepita.enumerated() {
            try load(
                layer.layer.parameters, names: ["weight"], prefix: "init.layers.\(index).",
                from: golden, on: device)
        }
        try load(network.buffers, names: ["F"], prefix: "", from: golden, on: device)
        if mirror != nil {
            try load(
                network.pepita.compactMap(\.feedbackFactor),
                names: (0..<layerCount).map { "init.factors.\($0)" }, prefix: "", from: golden,
                on: device)
        }

        // The parameters were written on the default stream, which `stream` does not wait for.
        try device.defaultStream.synchronize()
        let stream = try device.makeStream()
        let labels = try golden.input("labels")
        var comparisons: [GoldenComparison] = []
        for step in 0..<steps {
            let context = BatchContext(
                images: slice(x, step), labels: slice(labels, step).map { Int32($0) },
                inputShape: [1, 1, features], classes: classes,
                learningRate: sgd.learningRate, loss: LocalLoss())
            if mirror != nil {
                for (index, layer) in network.pepita.enumerated() {
                    let noise = try golden.input("step\(step).noise.\(index)")
                    context.shared[layer.mirrorNoiseKey] = try device.tensor(
                        noise.values, shape: noise.shape, on: stream)
                }
            }
            var loss: Float = 0
            try trainStep(network, context, on: stream) { index, pass, stageLoss in
                loss += stageLoss
                if index == layerCount - 1 {
                    // The clean output stage hands on e / B first.
                    let error = try device.read(pass.outputs[0], on: stream).map {
                        $0 * Float(batch)
                    }
                    let name = "step\(step).error"
                    comparisons.append(compare(name, error, try golden.output(name)))
                }
                if mirror != nil, index == layerCount,
                    let feedback = (network.stages[index] as? PEPITAModulatedStage)?.feedback
                {
                    // The first modulated stage composed F before its pass.
                    let name = "step\(step).F"
                    comparisons.append(
                        compare(
                            name, try device.read(feedback.value, on: stream),
                            try golden.output(name)))
                }
            }
            let name = "step\(step).loss"
            comparisons.append(compare(name, [loss], try golden.output(name)))
        }
        try stream.synchronize()
        for (index, layer) in network.pepita.enumerated() {
            comparisons += try compareWithMomentum(
                "final.layers.\(index).weight", layer.layer.weight, golden)
        }
        for (index, layer) in network.pepita.enumerated() {
            guard mirror != nil, let factor = layer.feedbackFactor else { continue }
            let name = "final.factors.\(index)"
            comparisons.append(
                compare(name, try device.read(factor.value), try golden.output(name)))
        }
        comparisons.append(try compareOutputPredictions(network, x, golden))
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    /// The case's weight mirroring (`config.mirror`: rate, decay, noise) and F's scale
    /// (`config.feedback_scale`, the deviation the mirrored F keeps); nil without.
    private static func mirroring(_ golden: GoldenCase) throws -> (
        settings: FeedbackMirroring, scale: Float
    )? {
        guard let data = golden.config else { return nil }
        let config = try JSONDecoder().decode(MirrorConfig.self, from: data)
        guard let mirror = config.mirror else { return nil }
        guard let scale = config.feedbackScale else {
            throw SigPropError.badGoldenFile(
                path: golden.name, reason: "config.mirror is given without config.feedback_scale")
        }
        return (
            FeedbackMirroring(rate: mirror.rate, decay: mirror.decay, noise: mirror.noise), scale
        )
    }

    private struct MirrorConfig: Decodable {
        struct Mirror: Decodable { let rate, decay, noise: Float }
        let mirror: Mirror?
        let feedbackScale: Float?
        enum CodingKeys: String, CodingKey {
            case mirror
            case feedbackScale = "feedback_scale"
        }
    }
}
