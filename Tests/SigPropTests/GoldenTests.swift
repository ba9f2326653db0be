import Foundation
import Testing

@testable import SigProp

/// The local loss against vectors computed by the authors' PyTorch library (Fixtures/ holds
/// the reference vectors of docs/golden-vectors.md).
@Suite struct GoldenTests {
    static let lossCases = [
        "loss2d_onehot_B8_D16", "loss2d_hidden_B32_D64", "loss2d_distinct_B16_D24",
        "loss4d_t0onehot_B6_C5_H4_W3", "loss4d_t0conv_B6_C5_H4_W4",
    ]

    @Test(arguments: TestBackend.available, lossCases)
    func localLossMatchesTheReference(_ backend: TestBackend, _ name: String) throws {
        let golden = try GoldenCase(contentsOf: try fixture(name))
        let report = try GoldenCheck.run(golden, on: try backend.device())
        #expect(
            report.comparisons.map(\.output) == [
                "loss", "y", "yy", "mask", "dloss_dh1", "dloss_dt1",
            ])
        expectPassed(report, name)
    }

    static let blockCases = [
        "linear_B8_Din16_Dout12", "linear_B32_Din784_Dout64", "linear_layernorm_B16_Din24_Dout32",
        "linear_adam3_B8_Din16_Dout12",
        "conv_B4_Cin3_Cout8_H8_W8", "conv_B8_Cin4_Cout6_H6_W5", "signal_B16_Din20_Dout12_K5",
    ]

    /// A whole block step (forward of both streams, loss, gradients, one Adam and one SGD step;
    /// three Adam steps in the adam3 case) through the same layer code `train` uses.
    @Test(arguments: TestBackend.available, blockCases)
    func blockStepMatchesTheReference(_ backend: TestBackend, _ name: String) throws {
        try expectMatchesReference(name, on: backend)
    }

    @Test func aWrongReferenceFails() throws {
        var golden = try GoldenCase(contentsOf: try fixture("loss2d_onehot_B8_D16"))
        let y = try golden.output("y")
        var outputs = golden.outputs
        outputs["y"] = GoldenTensor(shape: y.shape, values: y.values.map { $0 + 1e-3 })
        golden = GoldenCase(
            name: golden.name, kind: golden.kind, inputs: golden.inputs, outputs: outputs)
        let report = try GoldenCheck.run(golden, on: try TestBackend.cpu.device())
        #expect(!report.passed)
        #expect(report.comparisons.first { $0.output == "y" }?.passed == false)
    }

    @Test func unusableFilesAreNamed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-golden-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let notJSON = directory.appendingPathComponent("bad.json")
        try Data("not json".utf8).write(to: notJSON)
        #expect(
            throws: SigPropError.badGoldenFile(path: notJSON.path, reason: "is not a JSON object")
        ) {
            _ = try GoldenCase(contentsOf: notJSON)
        }
        let missing = directory.appendingPathComponent("missing.json")
        #expect { _ = try GoldenCase(contentsOf: missing) } throws: {
            "\($0)".contains("missing.json") && "\($0)".contains("cannot be read")
        }
    }
}

/// Whole-network training behaviour that the reference defines.
@Suite struct NetworkTests {
    enum Kind: Sendable, CaseIterable { case mlp, cnn }

    static func smallNetwork(
        _ device: Device, kind: Kind, norm: NormKind? = nil,
        rule: LearningRule = .signalPropagation
    ) throws -> Network {
        var network = (kind == .mlp ? TestNetwork.mlp() : TestNetwork.cnn([1, 8, 8])).with(
            rule: rule)
        if let norm {
            network.description.denseNorm = norm
            network.description.convNorm = norm
        }
        // SGD: the update is linear in the gradient, so rounding differences stay rounding-sized
        // (Adam's first steps are ±lr wherever a gradient entry is a cancellation residue).
        var optimizer = OptimizerSettings()
        optimizer.kind = .sgd
        optimizer.momentum = 0.9
        return try network.build(device, optimizer: optimizer, seed: 7)
    }

    static func weights(_ network: Network) throws -> [Float] {
        try network.parameters.flatMap { try network.device.read($0.value) }
    }

    /// docs/signal-propagation.md: with per-sample norms the target stream may run on K rows; the
    /// results are those of the B-row computation up to float rounding. Under Error
    /// Forward-Propagation the first pass that learns takes the shortcut and the second pass
    /// (each sample's own error) does not.
    @Test(
        arguments: TestBackend.available, [Kind.mlp, .cnn].map { ($0, false) } + [(.mlp, true)])
    func kRowShortcutMatchesTheFullTargetStream(_ backend: TestBackend, _ shape: (Kind, Bool))
        throws
    {
        let (kind, errorForward) = shape
        let rule =
            errorForward ? LearningRule(.efp, errorFirstPass: .learn) : .signalPropagation
        let device = try backend.device()
        let batch = 12
        let images = random(batch * (kind == .mlp ? 36 : 64), seed: 50)
        let labels: [Int32] = (0..<batch).map { Int32($0 % 3) }  // class 3 absent on purpose
        var results: [[Float]] = []
        var losses: [[Float]] = []
        for shortcut in [false, true] {
            let network = try Self.smallNetwork(device, kind: kind, rule: rule)
            #expect(network.kRowShortcutIsExact)
            let pipeline = try Pipeline(
                network: network, schedule: Schedule(.sequential), batchSize: batch,
                kRowShortcut: shortcut)
            var stepLosses: [Float] = []
            for _ in 0..<3 {
                let retired = try pipeline.submit(
                    images: images, labels: labels, loss: LocalLoss(), learningRate: 0.01,
                    kRowShortcut: shortcut)
                stepLosses += retired.flatMap(\.lossSums).map(Float.init)
            }
            results.append(try Self.weights(network))
            losses.append(stepLosses)
        }
        expectClose(losses[1], losses[0], absolute: 1e-4, relative: 1e-4, "\(kind) losses")
        expectClose(
            results[1], results[0], absolute: 1e-5, relative: 1e-3, "\(kind) weights after 3 steps")
        #expect(
            results[0] != (try Self.weights(Self.smallNetwork(device, kind: kind, rule: rule))),
            "training changed nothing")
    }

    /// Batch norm (statistics over the batch), and the error's pass that Error Forward-Propagation
    /// runs alone after a first pass that only predicts.
    @Test func whatTurnsTheShortcutOff() throws {
        let device = try TestBackend.cpu.device()
        #expect(
            try Self.smallNetwork(device, kind: .mlp, norm: .batch).kRowShortcutIsExact == false)
        #expect(try Self.smallNetwork(device, kind: .mlp).kRowShortcutIsExact)
        let predict = LearningRule(.efp, errorFirstPass: .predict)
        #expect(
            try Self.smallNetwork(device, kind: .mlp, rule: predict).kRowShortcutIsExact == false)
    }
}
