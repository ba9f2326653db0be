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
    /// readouts' predictions.
    @Test(arguments: TestBackend.available, goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend, _ name: String) throws {
        let golden = try GoldenCase(contentsOf: try fixture(name))
        let report = try GoldenCheck.run(golden, on: try backend.device())
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
