import Foundation
import Testing

@testable import SigProp

/// Forward-Forward against its PyTorch implementation (Benchmarks/reference/forward_forward.py,
/// golden vectors from forward_forward_golden.py), its layer gradient against finite
/// differences, its checkpoints, and the rule's refusals.
@Suite struct ForwardForwardTests {
    static let goldenCases = ["forward_forward_B6_D12_H8_K4", "forward_forward_B5_D10_H7x6_K3"]

    /// The reference's optimizer for the layers, at a fixed rate.
    static var optimizer: OptimizerSettings { GoldenCheck.forwardForwardSettings }

    /// Three training steps from the reference's initial weights, with its inputs and wrong
    /// labels (`GoldenCheck`, as `doctor --golden` runs them): every step's layer and
    /// classifier losses, then every weight, bias, running mean and momentum buffer, and both
    /// readouts' predictions. The OpenCL device posing as a GPU (nil) runs a GPU's first layer,
    /// which takes the product of every row set instead of deriving rows.
    @Test(arguments: TestBackend.available + [nil], goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend?, _ name: String) throws {
        guard let device = try TestBackend.device(backend) else { return }
        let golden = try GoldenCase(contentsOf: try fixture(name))
        let report = try GoldenCheck.run(golden, on: device)
        let compared = golden.outputs.keys.filter {
            $0.hasSuffix("_loss") && !$0.hasSuffix("peer_loss") || $0.hasPrefix("final.")
                || $0.hasPrefix("predictions.")
        }
        #expect(Set(report.comparisons.map(\.output)) == Set(compared))
        expectPassed(report, name)
    }

    @Test func aWrongReferenceFails() throws {
        let golden = try GoldenCase(contentsOf: try fixture(Self.goldenCases[0]))
        var outputs = golden.outputs
        let weight = try golden.output("final.layers.1.weight")
        outputs["final.layers.1.weight"] = GoldenTensor(
            shape: weight.shape, values: weight.values.map { $0 + 1e-3 })
        let report = try GoldenCheck.run(
            GoldenCase(
                name: golden.name, kind: golden.kind, inputs: golden.inputs, outputs: outputs),
            on: try TestBackend.cpu.device())
        #expect(!report.passed)
        #expect(report.comparisons.first { $0.output == "final.layers.1.weight" }?.passed == false)
    }

    /// Batches of the first layer for the relabelling tests, (rows, inputs, units, classes):
    /// no size a multiple of a vector or a work-group, ten labels, and one row of two inputs.
    static let relabelShapes = [(9, 53, 37, 3), (4, 30, 129, 10), (1, 2, 1, 2)]

    /// The first layer's rows derived from another label's (`forwardForwardRelabel`: a wrong
    /// label, every other label, the neutral row) against the product of the rows themselves
    /// in double on the host, on awkward shapes, written at an offset; rows that do not exist
    /// are refused.
    @Test(arguments: TestBackend.available)
    func relabelledRowsMatchTheirProduct(_ backend: TestBackend) throws {
        let device = try backend.device()
        for (count, inputs, units, classes) in Self.relabelShapes {
            let what = "\(count) rows of \(inputs) by \(units), K \(classes)"
            let images = random(count * inputs, seed: UInt64(inputs), in: 0...1)
            let (weight, bias) = (
                random(units * inputs, seed: UInt64(units)), random(units, seed: 7)
            )
            let labels = (0..<count).map { ($0 * 7 + 1) % classes }
            let others = labels.map { ($0 + 1) % classes }
            /// Unit-RMS rows of the images with `label` written in (nil: neutral), in double.
            func rows(_ label: (Int) -> Int?) -> [Float] {
                let values = ForwardForwardBlock.labelled(
                    images, count: count, classes: classes, labels: (0..<count).map(label))
                return (0..<count).flatMap { r in
                    let row = values[(r * inputs)..<((r + 1) * inputs)]
                    let scale =
                        1
                        / ((row.reduce(0.0) { $0 + Double($1 * $1) } / Double(inputs))
                            .squareRoot() + 1e-8)
                    return row.map { Float(Double($0) * scale) }
                }
            }
            func product(_ z: [Float]) -> [Float] {
                (0..<count).flatMap { r in
                    (0..<units).map { n in
                        Float(
                            (0..<inputs).reduce(Double(bias[n])) {
                                $0 + Double(z[r * inputs + $1]) * Double(weight[n * inputs + $1])
                            })
                    }
                }
            }
            let (labelled, neutral) = (rows { labels[$0] }, rows { _ in nil })
            let z = try device.tensor(labelled, shape: [count, inputs])
            let (w, b) = (
                try device.tensor(weight, shape: [units, inputs]),
                try device.tensor(bias, shape: [units])
            )
            let a = try device.tensor(product(labelled), shape: [count, units])
            let out = try device.zeros([(classes + 3) * count, units])
            let plan =
                (0..<count).map { ($0, labels[$0], Optional(others[$0])) }
                + (0..<classes).flatMap { k in (0..<count).map { ($0, labels[$0], Optional(k)) } }
                + (0..<count).map { ($0, labels[$0], Int?.none) }
            try device.forwardForwardRelabel(
                a, inputs: z, weight: w, bias: b, classes: classes, rows: plan,
                neutral: try device.tensor(neutral, shape: [count, inputs]), into: out, at: count)
            let expected =
                product(rows { others[$0] })
                + (0..<classes).flatMap { k in product(rows { _ in k }) } + product(neutral)
            expectClose(
                Array(try device.read(out)[(count * units)...]), expected, absolute: 1e-5,
                relative: 1e-4, what)
            #expect(throws: SigPropError.self) {
                try device.forwardForwardRelabel(
                    a, inputs: z, weight: w, bias: b, classes: classes,
                    rows: [(0, 0, nil)], into: out)
            }
            #expect(throws: SigPropError.self) {
                try device.forwardForwardRelabel(
                    a, inputs: z, weight: w, bias: b, classes: classes,
                    rows: [(count, 0, 1 % classes)], into: out)
            }
        }
    }

    /// The first layer's weight gradient from the positives alone
    /// (`forwardForwardRelabelGradient` after (g₊ + g₋)ᵀ Z₊) against the sum over both row
    /// sets, positives and negatives, in double on the host, on awkward shapes with the
    /// negatives' gradient at an offset; rows that do not exist are refused.
    @Test(arguments: TestBackend.available)
    func relabelledGradientMatchesBothRowSets(_ backend: TestBackend) throws {
        let device = try backend.device()
        for (count, inputs, units, classes) in Self.relabelShapes {
            let what = "\(count) rows of \(inputs) by \(units), K \(classes)"
            let images = random(count * inputs, seed: UInt64(inputs), in: 0...1)
            let labels = (0..<count).map { ($0 * 7 + 1) % classes }
            let wrong = labels.map { ($0 + 1 + $0 % max(classes - 1, 1)) % classes }
            let rows = try ForwardForwardBlock.normalizedRows(
                ForwardForwardBlock.labelled(
                    images, count: count, classes: classes, labels: labels + wrong),
                rows: 2 * count, device: device, on: nil)
            let z = try device.read(rows)
            // Two rows of gradient before the pairs: the plan's rows start at an offset.
            let g = random((2 * count + 2) * units, seed: 5)
            var expected = [Double](repeating: 0, count: units * inputs)
            for r in 0..<(2 * count) {
                for n in 0..<units {
                    for d in 0..<inputs {
                        expected[n * inputs + d] +=
                            Double(g[(r + 2) * units + n]) * Double(z[r * inputs + d])
                    }
                }
            }
            let positives = try device.zeros([count, inputs])
            try device.copyRows(rows, 0..<count, into: positives, at: 0)
            let summed = try device.tensor(
                (0..<(count * units)).map { g[2 * units + $0] + g[(count + 2) * units + $0] },
                shape: [count, units])
            let gradient = try device.tensor(g, shape: [2 * count + 2, units])
            let weightGradient = try device.zeros([units, inputs])
            try device.gemm(summed, transposeA: true, positives, into: weightGradient)
            try device.forwardForwardRelabelGradient(
                gradient, inputs: positives, classes: classes,
                rows: labels.indices.map { ($0, labels[$0], wrong[$0]) }, firstRow: count + 2,
                into: weightGradient)
            expectClose(
                try device.read(weightGradient), expected.map(Float.init), absolute: 1e-5,
                relative: 1e-4, what)
            #expect(throws: SigPropError.self) {
                try device.forwardForwardRelabelGradient(
                    gradient, inputs: positives, classes: classes, rows: [(count, 0, 1)],
                    firstRow: 0, into: weightGradient)
            }
            #expect(throws: SigPropError.self) {
                try device.forwardForwardRelabelGradient(
                    gradient, inputs: positives, classes: classes, rows: [(0, 0, 1)],
                    firstRow: 2 * count + 2, into: weightGradient)
            }
        }
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

    /// Hard negatives: each sample's wrong label of highest total goodness (never its own,
    /// the goodness readout's answer where that is wrong), chosen for each batch with the
    /// weights after every earlier batch. An epoch of the trainer equals batches trained one
    /// by one on the labels `hardestWrongLabels` gives at that moment, and differs from an
    /// epoch on random negatives.
    @Test(arguments: TestBackend.available)
    func hardNegativesAreTheWrongLabelsOfHighestGoodness(_ backend: TestBackend) throws {
        let device = try backend.device()
        var rule = LearningRule(.ff)
        rule.forwardForward.negatives = .hard
        let config = TestNetwork.forwardForward([12, 8]).with(rule: rule)
        let data = try TrainingTests.syntheticData(count: 96, seed: 3)
        var options = TrainingOptions()
        options.optimizer = Self.optimizer
        options.batchSize = 16
        options.validation = nil
        func network() throws -> Network {
            try config.build(device, optimizer: options.optimizer, seed: 4)
        }

        let trained = try network()
        let trainer = try Trainer(network: trained, options: options, train: data, test: data)
        #expect(trainer.choosesHardNegatives)
        _ = try trainer.runEpoch(0)

        let (images, labels) = data.batch(Array(0..<data.count))
        let hard = try trained.hardestWrongLabels(images, labels: labels)
        let goodness = try trained.forwardForwardScores(images, data.count).goodness
        let predicted = try trained.predictor()(images, data.count)["goodness"] ?? []
        for row in 0..<data.count {
            let label = Int(labels[row])
            let wrong = (0..<trained.classes).filter { $0 != label }
            let best = wrong.max {
                goodness[$0 * data.count + row] < goodness[$1 * data.count + row]
            }
            #expect(Int(hard[row]) == best, "sample \(row)")
            if predicted[row] != label { #expect(Int(hard[row]) == predicted[row]) }
        }

        let stepped = try network()
        let pipeline = try Pipeline(
            network: stepped, schedule: Schedule(.sequential), batchSize: options.batchSize)
        let order = try BatchOrder(
            count: data.count, batchSize: options.batchSize, seed: options.seed)
        for (index, indices) in order.batches(epoch: 0).enumerated() {
            let (images, labels) = data.batch(indices)
            _ = try pipeline.submit(
                images: images, labels: labels, loss: LocalLoss(),
                learningRate: options.optimizer.learningRate(epoch: 0, of: options.epochs),
                wrongLabels: try stepped.hardestWrongLabels(images, labels: labels),
                generator: trainer.batchGenerator(3, epoch: 0, batch: index), index: index)
            _ = try pipeline.drain()
        }
        #expect(try TrainingTests.state(stepped) == TrainingTests.state(trained))

        let random = try TestNetwork.forwardForward([12, 8]).build(
            device, optimizer: options.optimizer, seed: 4)
        _ = try Trainer(
            network: random, options: options, train: data, test: data
        ).runEpoch(0)
        #expect(try TrainingTests.state(random) != TrainingTests.state(trained))
    }

    /// On a learnable problem both readouts beat chance after a few epochs.
    @Test(arguments: TestBackend.available)
    func bothReadoutsLearn(_ backend: TestBackend) throws {
        let metrics = try TrainingTests.lastEpoch(
            of: .forwardForward([32, 32]), optimizer: Self.optimizer, epochs: 8,
            on: try backend.device())
        let accuracies = metrics.readoutAccuracies
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
