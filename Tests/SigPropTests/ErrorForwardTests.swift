import Foundation
import Testing

@testable import SigProp

/// Error Forward-Propagation against its PyTorch implementation (golden vectors from
/// Benchmarks/reference/efp_golden.py), what its second pass learns from, and what it learns.
@Suite struct ErrorForwardTests {
    static let goldenCases = ["efp_predict_B6_D12_H8x8_K4", "efp_learn_B5_D10_H7x6_K3"]

    /// Three training steps under each first pass from the reference's parameters
    /// (`GoldenCheck`, as `doctor --golden` runs them): every step's error and losses, then
    /// every parameter and momentum buffer, and the predictions.
    @Test(arguments: TestBackend.available, goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend, _ name: String) throws {
        try expectMatchesReference(name, on: backend)
    }

    /// The second pass's target stream carries the output's error: two networks that differ
    /// only in their output layer's weights predict differently, so their signal blocks take
    /// different steps on the same batch. Under Signal Propagation (the control) the signal
    /// block never sees the output layer.
    @Test(arguments: TestBackend.available, LearningRule.ErrorFirstPass.allCases)
    func theSignalBlockLearnsFromTheOutputsError(
        _ backend: TestBackend, _ firstPass: LearningRule.ErrorFirstPass
    ) throws {
        let device = try backend.device()
        let data = try TrainingTests.syntheticData(count: 32, seed: 4)
        let (images, labels) = data.batch(Array(0..<32))
        func signalStep(_ rule: LearningRule, outputScale: Float) throws -> [Float] {
            let network = try TestNetwork.mlp(hiddenLayers: 2, width: 12).with(rule: rule)
                .build(device, optimizer: OptimizerSettings(), seed: 3)
            let output = try #require(network.output)
            let weight = output.layer.weight.value
            try device.write(try device.read(weight).map { $0 * outputScale }, to: weight)
            let pipeline = try Pipeline(
                network: network, schedule: Schedule(.sequential), batchSize: 32)
            _ = try pipeline.submit(
                images: images, labels: labels, loss: LocalLoss(), learningRate: 1e-2)
            _ = try pipeline.drain()
            return try device.read(try #require(network.signal).context.weight.value)
        }
        let efp = LearningRule(.efp, errorFirstPass: firstPass)
        #expect(try signalStep(efp, outputScale: 1) != signalStep(efp, outputScale: -3))
        let sigprop = LearningRule.signalPropagation
        #expect(try signalStep(sigprop, outputScale: 1) == signalStep(sigprop, outputScale: -3))
    }

    /// On a learnable problem every readout's best beats chance after a few epochs, under
    /// either first pass.
    @Test(arguments: TestBackend.available, LearningRule.ErrorFirstPass.allCases)
    func itLearns(_ backend: TestBackend, _ firstPass: LearningRule.ErrorFirstPass) throws {
        let metrics = try TrainingTests.lastEpoch(
            of: TestNetwork.mlp(hiddenLayers: 2, width: 16).with(
                rule: LearningRule(.efp, errorFirstPass: firstPass)),
            optimizer: OptimizerSettings(), epochs: 4, on: try backend.device())
        #expect(metrics.testAccuracy > 0.5, "\(metrics.readoutAccuracies)")
        // The blocks' losses of the passes that learn (the output layer's is apart).
        #expect(metrics.blockLosses.count == (firstPass == .learn ? 4 : 2))
        #expect(metrics.blockLosses.allSatisfy { $0 > 0 && $0.isFinite })
    }
}
