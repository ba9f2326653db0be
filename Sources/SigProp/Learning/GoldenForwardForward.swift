import Foundation

/// Forward-Forward's reference vectors (`kind: forward_forward`, written by
/// Benchmarks/reference/forward_forward_golden.py): three training steps of a small network
/// from the reference's initial weights, inputs and wrong labels.
extension GoldenCheck {
    /// The reference's layer optimizer: SGD, momentum 0.9, rate 1e-3, weight decay 3e-4, at a
    /// fixed rate (no cooldown); the classifier's at the rule's defaults.
    static var forwardForwardSettings: OptimizerSettings {
        var settings = ForwardForwardSettings.layerOptimizer
        settings.linearCooldown = nil
        return settings
    }

    /// Entry `step` of `tensor`'s first dimension (a training step's batch), flattened.
    static func slice(_ tensor: GoldenTensor, _ step: Int) -> [Float] {
        let size = tensor.values.count / tensor.shape[0]
        return Array(tensor.values[(step * size)..<((step + 1) * size)])
    }

    /// Columns `range` of a row-major matrix with `total` columns.
    static func columns(_ values: [Float], of total: Int, _ range: Range<Int>) -> [Float] {
        stride(from: 0, to: values.count, by: total).flatMap {
            values[($0 + range.lowerBound)..<($0 + range.upperBound)]
        }
    }

    /// Every step's layer and classifier losses, then every weight, bias, momentum buffer and
    /// running mean, and both readouts' predictions on the last step's samples.
    static func checkForwardForward(_ golden: GoldenCase, on device: Device) throws
        -> GoldenReport
    {
        let x = try golden.input("x")
        let (steps, batch, features) = (x.shape[0], x.shape[1], x.shape[2])
        let layerCount = golden.inputs.keys.filter { $0.hasSuffix(".running_mean") }.count
        let widths = try (0..<layerCount).map {
            try golden.input("init.layers.\($0).bias").values.count
        }
        let initialClassifier = try golden.input("init.classifier.weight")
        let classes = initialClassifier.shape[0]
        let network = try Network(
            NetworkDescription(layers: widths.map { NetworkDescription.Layer.dense($0) }),
            inputShape: [1, 1, features], classes: classes, device: device,
            optimizer: forwardForwardSettings, seed: 1, rule: LearningRule(.ff))
        guard let classifier = network.classifier else {
            throw SigPropError.configuration("the network has no Forward-Forward classifier")
        }
        let offsets = classifier.parts.reduce(into: [0]) { $0.append($0.last! + $1.inputs) }
        let total = offsets.last!
        for (index, layer) in network.forwardForward.enumerated() {
            let names = ["weight", "bias"]
            try load(
                layer.layer.parameters, names: names, prefix: "init.layers.\(index).",
                from: golden, on: device)
            try load(
                [layer.runningMean], names: ["running_mean"], prefix: "init.layers.\(index).",
                from: golden, on: device)
        }
        for (index, part) in classifier.parts.enumerated() {
            try device.write(
                columns(initialClassifier.values, of: total, offsets[index]..<offsets[index + 1]),
                to: part.weight.value)
        }

        // The parameters were written on the default stream, which `stream` does not wait for.
        try device.defaultStream.synchronize()
        let stream = try device.makeStream()
        let (labels, wrong) = (try golden.input("labels"), try golden.input("negative_labels"))
        var comparisons: [GoldenComparison] = []
        for step in 0..<steps {
            let context = BatchContext(
                images: slice(x, step), labels: slice(labels, step).map { Int32($0) },
                inputShape: [1, 1, features], classes: classes, learningRate: 1e-3,
                loss: LocalLoss())
            context.wrongLabels = slice(wrong, step).map { Int32($0) }
            try trainStep(network, context, on: stream) { index, _, loss in
                let name =
                    index < layerCount
                    ? "step\(step).layers.\(index).ff_loss" : "step\(step).classifier_loss"
                let reference = try golden.output(name)
                // A layer's loss sums 2B logistic terms of goodness in the tens.
                comparisons.append(
                    compare(
                        name, [loss], reference, tolerance: 1e-4 * max(1, abs(reference.values[0])))
                )
            }
        }
        try stream.synchronize()

        for (index, layer) in network.forwardForward.enumerated() {
            for (name, parameter) in zip(["weight", "bias"], layer.layer.parameters) {
                comparisons += try compareWithMomentum(
                    "final.layers.\(index).\(name)", parameter, golden)
            }
            let name = "final.layers.\(index).running_mean"
            comparisons.append(
                compare(name, try device.read(layer.runningMean.value), try golden.output(name)))
        }
        var weights = [Float](repeating: 0, count: classes * total)
        var buffers = weights
        for (index, part) in classifier.parts.enumerated() {
            let (values, momentum) = (
                try device.read(part.weight.value),
                try device.read(part.weight.state["momentum"] ?? part.weight.value)
            )
            for row in 0..<classes {
                for column in 0..<part.inputs {
                    weights[row * total + offsets[index] + column] =
                        values[row * part.inputs + column]
                    buffers[row * total + offsets[index] + column] =
                        momentum[row * part.inputs + column]
                }
            }
        }
        comparisons += try compareWithMomentum(
            "final.classifier.weight", value: weights, momentum: buffers, golden)
        let predictions = try network.predictor()(slice(x, steps - 1), batch)
        for (readout, name) in [
            ("output", "predictions.linear"), ("goodness", "predictions.goodness"),
        ] {
            comparisons.append(
                compare(
                    name, (predictions[readout] ?? []).map(Float.init), try golden.output(name),
                    tolerance: 0))
        }
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }
}
