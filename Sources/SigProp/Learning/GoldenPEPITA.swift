import Foundation

/// PEPITA's reference vectors (`kind: pepita`, written by Benchmarks/reference/pepita_golden.py):
/// three training steps of a small network from the reference's weights and feedback matrix.
extension GoldenCheck {
    /// Every step's error and clean cross entropy, then every weight and momentum buffer, and
    /// the clean pass's predictions on the last step's samples.
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
        let network = try Network(
            NetworkDescription(
                layers: weights.dropLast().map { NetworkDescription.Layer.dense($0.shape[0]) }),
            inputShape: [1, 1, features], classes: classes, device: device,
            optimizer: settings, seed: 1, rule: LearningRule(.pepita))
        for (index, layer) in network.pepita.enumerated() {
            try load(
                layer.layer.parameters, names: ["weight"], prefix: "init.layers.\(index).",
                from: golden, on: device)
        }
        try load(network.buffers, names: ["F"], prefix: "", from: golden, on: device)

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
            }
            let name = "step\(step).loss"
            comparisons.append(compare(name, [loss], try golden.output(name)))
        }
        try stream.synchronize()
        for (index, layer) in network.pepita.enumerated() {
            comparisons += try compareWithMomentum(
                "final.layers.\(index).weight", layer.layer.weight, golden)
        }
        comparisons.append(try compareOutputPredictions(network, x, golden))
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }
}
