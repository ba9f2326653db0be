import Foundation

/// Error Forward-Propagation's reference vectors (`kind: efp`, written by
/// Benchmarks/reference/efp_golden.py): three training steps of a small Signal Propagation
/// network under either first pass, from the reference's initial parameters.
extension GoldenCheck {
    /// Every step's error (from the first pass's logits) and the losses of both passes, then
    /// every parameter and momentum buffer, and the output layer's predictions on the last
    /// step's samples.
    static func checkErrorForward(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        let x = try golden.input("x")
        let (steps, features) = (x.shape[0], x.shape[2])
        let hiddenCount = golden.inputs.keys.filter {
            $0.hasPrefix("init.hidden.") && $0.hasSuffix(".0.weight")
        }.count
        let widths =
            try [golden.input("init.input.0.weight").shape[0]]
            + (0..<hiddenCount).map { try golden.input("init.hidden.\($0).0.weight").shape[0] }
        let classes = try golden.input("init.output.weight").shape[0]
        guard let sgd = golden.sgd else {
            throw SigPropError.badGoldenFile(path: golden.name, reason: "config.sgd is missing")
        }
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.learningRate = sgd.learningRate
        settings.momentum = sgd.momentum
        settings.weightDecay = sgd.weightDecay
        let learnsFirst = golden.outputs["step0.first.losses"] != nil
        let network = try Network(
            NetworkDescription(layers: widths.map { NetworkDescription.Layer.dense($0) }),
            inputShape: [1, 1, features], classes: classes, device: device,
            optimizer: settings, seed: 1,
            rule: LearningRule(.efp, errorFirstPass: learnsFirst ? .learn : .predict))
        guard let signal = network.signal, let output = network.output else {
            throw SigPropError.configuration("the network has no Signal Propagation blocks")
        }
        let layerNames = ["0.weight", "0.bias", "1.weight", "1.bias"]
        var named: [(String, Parameter)] = []
        named += zip(layerNames.map { "input." + $0 }, signal.input.parameters).map { ($0, $1) }
        named += zip(
            ["context.0.weight", "context.1.weight", "context.1.bias"], signal.context.parameters
        ).map { ($0, $1) }
        for (index, block) in network.hidden.enumerated() {
            named += zip(layerNames.map { "hidden.\(index)." + $0 }, block.layer.parameters).map {
                ($0, $1)
            }
        }
        named += zip(["output.weight", "output.bias"], output.layer.parameters).map { ($0, $1) }
        for (name, parameter) in named {
            try load([parameter], names: [name], prefix: "init.", from: golden, on: device)
        }

        // The parameters were written on the default stream, which `stream` does not wait for.
        try device.defaultStream.synchronize()
        let stream = try device.makeStream()
        let labels = try golden.input("labels")
        let firstPassStages = network.plan.stages.count
        var comparisons: [GoldenComparison] = []
        for step in 0..<steps {
            let stepLabels = slice(labels, step).map { Int32($0) }
            // The first pass that learns takes the K-row shortcut where training would.
            let context = BatchContext(
                images: slice(x, step), labels: stepLabels, inputShape: [1, 1, features],
                classes: classes, learningRate: sgd.learningRate, loss: LocalLoss(),
                byClass: network.kRowShortcutIsExact)
            var (first, second): ([Float], [Float]) = ([], [])
            try trainStep(network, context, on: stream) { index, pass, loss in
                if index == firstPassStages - 1 {
                    // The first pass's logits; the error is softmax − onehot of them.
                    let logits = try device.read(pass.outputs[0], on: stream)
                    let name = "step\(step).error"
                    comparisons.append(
                        compare(name, error(logits, stepLabels, classes), try golden.output(name)))
                } else if network.stages[index].reportsLoss {
                    if index < firstPassStages { first.append(loss) } else { second.append(loss) }
                }
            }
            if learnsFirst {
                let name = "step\(step).first.losses"
                comparisons.append(compare(name, first, try golden.output(name)))
            }
            let name = "step\(step).losses"
            comparisons.append(compare(name, second, try golden.output(name)))
        }
        try stream.synchronize()
        for (name, parameter) in named {
            comparisons += try compareWithMomentum("final." + name, parameter, golden)
        }
        comparisons.append(try compareOutputPredictions(network, x, golden))
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    /// softmax(logits) − onehot(labels), row by row, in double precision.
    private static func error(_ logits: [Float], _ labels: [Int32], _ classes: Int) -> [Float] {
        labels.enumerated().flatMap { row, label in
            let values = logits[(row * classes)..<((row + 1) * classes)].map(Double.init)
            let top = values.max() ?? 0
            let exps = values.map { exp($0 - top) }
            let sum = exps.reduce(0, +)
            return exps.enumerated().map { column, value in
                Float(value / sum - (column == Int(label) ? 1 : 0))
            }
        }
    }
}
