import Foundation
import Testing

@testable import SigProp

/// Forward-Forward against its PyTorch implementation (Benchmarks/reference/forward_forward.py,
/// golden vectors from forward_forward_golden.py), its layer gradient against finite
/// differences, its checkpoints, and the rule's refusals.
@Suite struct ForwardForwardTests {
    static let goldenCases = ["forward_forward_B6_D12_H8_K4", "forward_forward_B5_D10_H7x6_K3"]

    /// The reference's optimizer for the layers: SGD, momentum 0.9, rate 1e-3, weight decay
    /// 3e-4, no schedule (the golden steps run at a fixed rate).
    static var optimizer: OptimizerSettings {
        var settings = ForwardForwardSettings.layerOptimizer
        settings.linearCooldown = nil
        return settings
    }

    /// `tensor`'s values for step `step` of its first dimension.
    static func slice(_ tensor: GoldenTensor, _ step: Int) -> [Float] {
        let size = tensor.values.count / tensor.shape[0]
        return Array(tensor.values[(step * size)..<((step + 1) * size)])
    }

    /// Columns `range` of a row-major [rows, columns] matrix.
    static func columns(_ values: [Float], of total: Int, _ range: Range<Int>) -> [Float] {
        stride(from: 0, to: values.count, by: total).flatMap {
            values[($0 + range.lowerBound)..<($0 + range.upperBound)]
        }
    }

    /// Three training steps from the reference's initial weights, with its inputs and wrong
    /// labels: every step's layer and classifier losses, then every weight, bias, running
    /// mean and momentum buffer, and both readouts' predictions.
    @Test(arguments: TestBackend.available, goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend, _ name: String) throws {
        let device = try backend.device()
        let golden = try GoldenCase(contentsOf: try fixture(name))
        let x = try golden.input("x")
        let (steps, batch, features) = (x.shape[0], x.shape[1], x.shape[2])
        let layerCount = golden.inputs.keys.filter { $0.hasSuffix(".running_mean") }.count
        let widths = try (0..<layerCount).map {
            try golden.input("init.layers.\($0).bias").values.count
        }
        let classes = try golden.input("init.classifier.weight").shape[0]
        let network = try Network(
            NetworkDescription(layers: widths.map { NetworkDescription.Layer.dense($0) }),
            inputShape: [1, 1, features],
            classes: classes, device: device, optimizer: Self.optimizer, seed: 1,
            rule: LearningRule(.ff))
        let classifier = try #require(network.classifier)
        let readoutWidths = classifier.parts.map { $0.inputs }
        let offsets = readoutWidths.reduce(into: [0]) { $0.append($0.last! + $1) }
        for (index, layer) in network.forwardForward.enumerated() {
            try device.write(
                try golden.input("init.layers.\(index).weight").values,
                to: layer.layer.weight.value)
            try device.write(
                try golden.input("init.layers.\(index).bias").values,
                to: try #require(layer.layer.bias).value)
            try device.write(
                try golden.input("init.layers.\(index).running_mean").values,
                to: layer.runningMean.value)
        }
        let initialClassifier = try golden.input("init.classifier.weight").values
        for (index, part) in classifier.parts.enumerated() {
            try device.write(
                Self.columns(
                    initialClassifier, of: offsets.last!, offsets[index]..<offsets[index + 1]),
                to: part.weight.value)
        }

        // The weights were written on the default stream, which `stream` does not wait for.
        try device.defaultStream.synchronize()
        let labels = try golden.input("labels")
        let wrong = try golden.input("negative_labels")
        let stream = try device.makeStream()
        for step in 0..<steps {
            let context = BatchContext(
                images: Self.slice(x, step), labels: Self.slice(labels, step).map { Int32($0) },
                inputShape: [1, 1, features], classes: classes, learningRate: 1e-3,
                loss: LocalLoss())
            context.wrongLabels = Self.slice(wrong, step).map { Int32($0) }
            var handedOn: [Tensor] = []
            var losses: [Float] = []
            for stage in network.stages {
                let pass = try stage.forward(handedOn, batch: context, on: stream)
                let rows = try pass.learn(stream)
                losses.append(try device.read(rows, on: stream).reduce(0, +))
                handedOn = pass.outputs
            }
            for index in 0..<layerCount {
                expectClose(
                    [losses[index]],
                    try golden.output("step\(step).layers.\(index).ff_loss").values,
                    absolute: 1e-4, "\(name) step \(step) layer \(index) loss")
            }
            expectClose(
                [losses[layerCount]], try golden.output("step\(step).classifier_loss").values,
                absolute: 1e-5, "\(name) step \(step) classifier loss")
        }
        try stream.synchronize()

        for (index, layer) in network.forwardForward.enumerated() {
            let bias = try #require(layer.layer.bias)
            for (what, parameter) in [("weight", layer.layer.weight), ("bias", bias)] {
                expectClose(
                    try device.read(parameter.value),
                    try golden.output("final.layers.\(index).\(what)").values,
                    absolute: 2e-6, relative: 1e-4, "\(name) layer \(index) \(what)")
                expectClose(
                    try device.read(try #require(parameter.state["momentum"])),
                    try golden.output("final.layers.\(index).\(what).momentum_buffer").values,
                    absolute: 1e-5, relative: 1e-3, "\(name) layer \(index) \(what) momentum")
            }
            expectClose(
                try device.read(layer.runningMean.value),
                try golden.output("final.layers.\(index).running_mean").values,
                absolute: 1e-5, "\(name) layer \(index) running mean")
        }
        let finalClassifier = try golden.output("final.classifier.weight").values
        let momentum = try golden.output("final.classifier.weight.momentum_buffer").values
        for (index, part) in classifier.parts.enumerated() {
            let range = offsets[index]..<offsets[index + 1]
            expectClose(
                try device.read(part.weight.value),
                Self.columns(finalClassifier, of: offsets.last!, range),
                absolute: 2e-6, relative: 1e-4, "\(name) classifier part \(index)")
            expectClose(
                try device.read(try #require(part.weight.state["momentum"])),
                Self.columns(momentum, of: offsets.last!, range), absolute: 1e-5,
                relative: 1e-3, "\(name) classifier part \(index) momentum")
        }

        let predictions = try network.predictor()(Self.slice(x, steps - 1), batch)
        #expect(
            predictions["output"]
                == (try golden.output("predictions.linear").values.map { Int($0) }))
        #expect(
            predictions["goodness"]
                == (try golden.output("predictions.goodness").values.map { Int($0) }))
    }

    /// d loss / d W of one layer (the row kernel's gradient through the weight product)
    /// against central differences of the loss the kernel computes, in double on the host.
    @Test(arguments: TestBackend.available)
    func layerGradientMatchesFiniteDifferences(_ backend: TestBackend) throws {
        let device = try backend.device()
        let (rows, positives, inputs, outputs) = (10, 5, 7, 9)
        let z = random(rows * inputs, seed: 41)
        var weights = random(outputs * inputs, seed: 42).map { $0 * 0.8 }
        let threshold: Float = 2.5
        /// The layer loss (mean logistic loss of goodness - threshold) and its weight gradient.
        func evaluate(_ w: [Float]) throws -> (loss: Double, gradient: [Float]) {
            let input = try device.tensor(z, shape: [rows, inputs])
            let a = try device.zeros([rows, outputs])
            try device.gemm(
                input, try device.tensor(w, shape: [outputs, inputs]), transposeB: true, into: a)
            let dA = try device.zeros([rows, outputs])
            let losses = try device.zeros([rows])
            try device.forwardForwardRows(
                a, normalized: try device.zeros([rows, outputs]),
                sumSquares: try device.zeros([rows]),
                positives: positives, threshold: threshold, gradient: dA, rowLosses: losses)
            let gradient = try device.zeros([outputs, inputs])
            try device.gemm(dA, transposeA: true, input, into: gradient)
            return (
                try device.read(losses).reduce(0) { $0 + Double($1) }, try device.read(gradient)
            )
        }
        let analytic = try evaluate(weights).gradient
        // Small enough that few pre-activations cross ReLU's kink, large enough for float sums.
        let step: Float = 2e-3
        var worst: Float = 0
        for index in stride(from: 0, to: weights.count, by: 5) {
            let original = weights[index]
            weights[index] = original + step
            let up = try evaluate(weights).loss
            weights[index] = original - step
            let down = try evaluate(weights).loss
            weights[index] = original
            let numeric = Float((up - down) / Double(2 * step))
            worst = max(worst, abs(numeric - analytic[index]) / max(abs(numeric), 1e-2))
        }
        #expect(worst < 2e-2, "largest relative error \(worst)")
        #expect(analytic.contains { abs($0) > 1e-3 }, "the gradient is not all zero")
    }

    /// A checkpoint restores the running means with the weights: training on from it gives the
    /// numbers of training on without it.
    @Test(arguments: TestBackend.available)
    func checkpointResumesExactly(_ backend: TestBackend) throws {
        let device = try backend.device()
        let config = TestNetwork.forwardForward([12, 8])
        let data = try TrainingTests.syntheticData(count: 64, seed: 4)
        func step(_ network: Network, _ indices: [Int]) throws {
            let (images, labels) = data.batch(indices)
            let pipeline = try Pipeline(
                network: network, schedule: Schedule(.sequential), batchSize: indices.count)
            _ = try pipeline.submit(
                images: images, labels: labels, loss: LocalLoss(), learningRate: 1e-2,
                generator: SeededGenerator(seed: UInt64(indices[0])))
            _ = try pipeline.drain()
        }
        let original = try config.build(device, optimizer: Self.optimizer, seed: 5)
        try step(original, Array(0..<16))
        try step(original, Array(16..<32))
        let bytes = try Checkpoint(network: original, options: TrainingOptions(), epochs: 1)
            .serialized()
        let loaded = try Checkpoint(safetensors: bytes, path: "memory")
        #expect(try loaded.rule == original.rule)
        let resumed = try config.build(device, optimizer: Self.optimizer, seed: 77)
        try loaded.restore(into: resumed)
        #expect(try TrainingTests.state(resumed) == TrainingTests.state(original))
        try step(original, Array(32..<48))
        try step(resumed, Array(32..<48))
        #expect(try TrainingTests.state(resumed) == TrainingTests.state(original))
    }

    /// On a learnable problem both readouts beat chance after a few epochs.
    @Test(arguments: TestBackend.available)
    func bothReadoutsLearn(_ backend: TestBackend) throws {
        let device = try backend.device()
        var options = TrainingOptions()
        options.optimizer = Self.optimizer
        options.optimizer.learningRate = 0.05
        options.batchSize = 32
        options.validation = nil
        options.epochs = 8
        let network = try TestNetwork.forwardForward([32, 32]).build(
            device, optimizer: options.optimizer, seed: 2)
        let trainer = try Trainer(
            network: network, options: options,
            train: try TrainingTests.syntheticData(count: 512, seed: 1),
            test: try TrainingTests.syntheticData(count: 256, seed: 2))
        var last: EpochMetrics?
        for epoch in 0..<options.epochs {
            guard case .completed(let metrics) = try trainer.runEpoch(epoch) else { return }
            last = metrics
        }
        let accuracies = try #require(last).readoutAccuracies
        #expect((accuracies["output"] ?? 0) > 0.5, "\(accuracies)")
        #expect((accuracies["goodness"] ?? 0) > 0.5, "\(accuracies)")
    }

    @Test func networksTheRuleCannotTrainAreRefused() throws {
        let device = try TestBackend.cpu.device()
        #expect(throws: SigPropError.self) {
            _ = try TestNetwork(
                description: try NetworkDescription(layerList: "conv4,dense8"),
                rule: LearningRule(.ff)
            ).build(device, seed: 1)
        }
        // The label must fit in the input (4 classes over 3 values).
        #expect(throws: SigPropError.self) {
            _ = try TestNetwork(
                description: NetworkDescription(layers: [.dense(8)]), inputShape: [1, 1, 3],
                rule: LearningRule(.ff)
            ).build(device, seed: 1)
        }
        let network = try TestNetwork.forwardForward([8]).build(device, seed: 1)
        var options = TrainingOptions()
        options.readout = .similarity
        options.validation = nil
        options.batchSize = 8
        let data = try TrainingTests.syntheticData(count: 32, seed: 1)
        #expect(throws: SigPropError.self) {
            _ = try Trainer(network: network, options: options, train: data, test: data)
        }
    }
}
