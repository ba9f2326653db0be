import Foundation
import Testing

@testable import SigProp

/// PEPITA against its PyTorch implementation (Benchmarks/reference/pepita.py, golden vectors
/// from pepita_golden.py), its checkpoints and what it learns.
@Suite struct PEPITATests {
    static let goldenCases = [
        "pepita_B6_D12_H8_K4", "pepita_B5_D10_H7x6_K3", "pepita_mirror_B6_D12_H8x7_K4",
    ]

    /// Three training steps from the reference's weights and feedback matrix (`GoldenCheck`,
    /// as `doctor --golden` runs them): every step's error and cross entropy, then every
    /// weight and momentum buffer, and the predictions. With weight mirroring also F as each
    /// step composes it and the factors after the last step.
    @Test(arguments: TestBackend.available, goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend, _ name: String) throws {
        let golden = try GoldenCase(contentsOf: try fixture(name))
        let report = try GoldenCheck.run(golden, on: try backend.device())
        let compared = golden.outputs.keys.filter { !$0.hasSuffix(".delta") }
        #expect(Set(report.comparisons.map(\.output)) == Set(compared))
        expectPassed(report, name)
    }

    /// Both passes drop the same units: with no feedback (F = 0) the modulated input equals
    /// the clean one, so the hidden layers see no difference and keep their weights, dropout
    /// or not; the output layer still learns.
    @Test(arguments: TestBackend.available)
    func bothPassesShareTheDropoutMask(_ backend: TestBackend) throws {
        let device = try backend.device()
        let network = try TestNetwork(
            description: try NetworkDescription(layerList: "dense16,dropout0.5"),
            rule: LearningRule(.pepita, feedbackScale: 0)
        ).build(device, optimizer: LearningRule.pepitaOptimizer, seed: 3)
        let before = try network.pepita.map { try device.read($0.layer.weight.value) }
        let data = try TrainingTests.syntheticData(count: 32, seed: 4)
        let (images, labels) = data.batch(Array(0..<32))
        let pipeline = try Pipeline(
            network: network, schedule: Schedule(.sequential), batchSize: 32)
        _ = try pipeline.submit(
            images: images, labels: labels, loss: LocalLoss(), learningRate: 0.1,
            dropout: DropoutMasks(generator: SeededGenerator(seed: 9)))
        _ = try pipeline.drain()
        let after = try network.pepita.map { try device.read($0.layer.weight.value) }
        #expect(after[0] == before[0], "the hidden layer changed: its two passes differed")
        #expect(after[1] != before[1], "the output layer did not learn")
    }

    static let mirrored = TestNetwork(
        description: try! NetworkDescription(layerList: "dense16,dropout0.2,dense8"),
        rule: LearningRule(.pepita, mirroring: FeedbackMirroring()))

    /// Weight mirroring in the pipeline: F composed by the first layer's modulated pass from
    /// factors that the other layers' streams mirror gives the sequential numbers, and the
    /// factors learn.
    @Test(arguments: TestBackend.available)
    func mirroringTrainsTheSamePipelinedAndSequential(_ backend: TestBackend) throws {
        let device = try backend.device()
        let initial = try Self.mirrored.build(
            device, optimizer: ArchitectureTests.options.optimizer, seed: 11)
        let factors = try initial.pepita.map { try device.read(#require($0.feedbackFactor).value) }
        let sequential = try ArchitectureTests.trainedState(
            Self.mirrored, devices: [device], schedule: Schedule(.sequential))
        let pipelined = try ArchitectureTests.trainedState(
            Self.mirrored, devices: [device], schedule: Schedule(.pipelined))
        let differing = zip(pipelined, sequential).filter { $0 != $1 }.count
        #expect(pipelined == sequential, "pipelined differs from sequential in \(differing) values")
        let trained = try Self.mirrored.build(
            device, optimizer: ArchitectureTests.options.optimizer, seed: 11)
        let trainer = try Trainer(
            network: trained, options: ArchitectureTests.options,
            train: try TrainingTests.syntheticData(count: 96, seed: 1),
            test: try TrainingTests.syntheticData(count: 32, seed: 2))
        _ = try trainer.runEpoch(0)
        for (layer, before) in zip(trained.pepita, factors) {
            #expect(try device.read(#require(layer.feedbackFactor).value) != before)
        }
    }

    /// The alignment the metrics report: a random F stands near 90° to the weights' product;
    /// thirty batches of mirroring bring −F well below it. The noise is strong (deviation 1)
    /// so that each batch's response stands out against the factors' random start, which the
    /// rescaling keeps at F's deviation (with 0.1 this small network needs hundreds of
    /// batches; pepita.py gives the same). nil under other rules.
    @Test(arguments: TestBackend.available)
    func mirroringAlignsTheFeedback(_ backend: TestBackend) throws {
        let device = try backend.device()
        let network = try Self.mirrored.with(
            rule: LearningRule(
                .pepita, mirroring: FeedbackMirroring(rate: 0.2, decay: 0.5, noise: 1))
        ).build(device, optimizer: ArchitectureTests.options.optimizer, seed: 11)
        let random = try #require(try network.feedbackAngle())
        let trainer = try Trainer(
            network: network, options: ArchitectureTests.options,
            train: try TrainingTests.syntheticData(count: 320, seed: 1),
            test: try TrainingTests.syntheticData(count: 32, seed: 2))
        _ = try trainer.runEpoch(0)
        _ = try trainer.runEpoch(1)
        guard case .completed(let metrics) = try trainer.runEpoch(2) else {
            throw SigPropError.configuration("the epoch did not complete")
        }
        let aligned = try #require(metrics.feedbackAngle)
        #expect(abs(random - 90) < 15, "random F at \(random)°")
        #expect(aligned < 65, "mirrored F at \(aligned)°")
        let sigprop = try TestNetwork.mlp(hiddenLayers: 1, width: 8).build(device, seed: 1)
        #expect(try sigprop.feedbackAngle() == nil)
    }

    /// Pre-mirroring: in its epochs the factors learn and the weights keep their values; after
    /// them the weights learn.
    @Test(arguments: TestBackend.available)
    func preMirroringEpochsLeaveTheWeights(_ backend: TestBackend) throws {
        let device = try backend.device()
        let network = try Self.mirrored.with(
            rule: LearningRule(.pepita, mirroring: FeedbackMirroring(preMirrorEpochs: 1))
        ).build(device, optimizer: ArchitectureTests.options.optimizer, seed: 11)
        let trainer = try Trainer(
            network: network, options: ArchitectureTests.options,
            train: try TrainingTests.syntheticData(count: 96, seed: 1),
            test: try TrainingTests.syntheticData(count: 32, seed: 2))
        func weights() throws -> [[Float]] {
            try network.pepita.map { try device.read($0.layer.weight.value) }
        }
        func factors() throws -> [[Float]] {
            try network.pepita.map { try device.read(#require($0.feedbackFactor).value) }
        }
        let (weights0, factors0) = (try weights(), try factors())
        _ = try trainer.runEpoch(0)
        #expect(try weights() == weights0)
        #expect(try factors() != factors0)
        _ = try trainer.runEpoch(1)
        #expect(try weights() != weights0)
    }

    /// The factors are composed on the first layer's device: layers on several are refused,
    /// naming the way out.
    @Test func mirroringOnSeveralDevicesIsRefused() throws {
        #expect {
            _ = try Self.mirrored.build(
                try MultiDeviceTests.splitCPU(2), optimizer: LearningRule.pepitaOptimizer, seed: 1)
        } throws: { error in
            "\(error)".contains("leave --pepita-mirror out")
        }
    }

    /// On a learnable problem the clean pass beats chance after a few epochs.
    @Test(arguments: TestBackend.available)
    func itLearns(_ backend: TestBackend) throws {
        let metrics = try TrainingTests.lastEpoch(
            of: .pepita([32]), optimizer: LearningRule.pepitaOptimizer, epochs: 6,
            on: try backend.device())
        #expect(metrics.testAccuracy > 0.5, "\(metrics.readoutAccuracies)")
        #expect(metrics.outputLoss > 0 && metrics.outputLoss.isFinite)
    }
}
