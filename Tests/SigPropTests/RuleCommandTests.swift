import Foundation
import Testing

@testable import SigProp

/// `train --rule`: each rule trains, records its rule and its state besides weights, resumes
/// without repeating the rule, and refuses what it cannot train before any training. Part of the
/// serialized process suite.
extension ProcessTests {
    @Test func forwardForwardTrainsAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(
                data, checkpoints,
                ["--rule", "ff", "--model", "dense16,dense16", "--ff-negatives", "hard"]))
        #expect(status == 0, "\(output)")
        #expect(output.contains("rule: Forward-Forward"), "\(output)")
        #expect(output.contains("hard negatives)"), "\(output)")
        #expect(output.contains("schedule sequential; auto: hard negatives"), "\(output)")
        #expect(output.contains("goodness"), "\(output)")
        #expect(output.contains("none: Forward-Forward reads pixels in 0...1"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        #expect(try checkpoint.rule.name == .ff)
        #expect(try checkpoint.rule.forwardForward.negatives == .hard)
        #expect(checkpoint.tensors["layer1.running_mean"]?.shape == [16])
        #expect(try checkpoint.options.optimizer.kind == .sgd)
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--ff-negatives", "random"],
            naming: "--ff-negatives random (checkpoint: hard)")
        // --describe counts Forward-Forward's parameters: no label projection, a classifier
        // over the second layer (16 x 10 weights).
        let described = try Self.run(
            Self.model(
                data, checkpoints, ["--rule", "ff", "--model", "dense16,dense16", "--describe"]))
        #expect(described.status == 0, "\(described.output)")
        #expect(described.output.contains("layer1"), "\(described.output)")
        #expect(described.output.contains("classifier"), "\(described.output)")
        #expect(described.output.contains("160"), "\(described.output)")
    }

    @Test func pepitaTrainsAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(data, checkpoints, ["--rule", "pepita", "--model", "dense16,dropout0.1"]))
        #expect(status == 0, "\(output)")
        #expect(output.contains("rule: PEPITA (feedback scale 0.05)"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        #expect(try checkpoint.rule.name == .pepita)
        #expect(checkpoint.tensors["feedback"]?.shape == [64, 10])
        #expect(try checkpoint.model.description.hasDropout)
        #expect(try checkpoint.options.optimizer.milestones == [60, 90])
        try Self.expectResumes(data, checkpoints, from: last)
        let refused = try Self.run(
            Self.model(data, checkpoints, ["--rule", "pepita", "--readout", "goodness"]))
        #expect(refused.status == 64, "\(refused.output)")
    }

    @Test func pepitaWeightMirroringTrainsAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(
                data, checkpoints,
                [
                    "--rule", "pepita", "--model", "dense16,dense12", "--pepita-mirror",
                    "--pepita-mirror-decay", "0.25",
                ]))
        #expect(status == 0, "\(output)")
        #expect(
            output.contains(
                "rule: PEPITA (feedback scale 0.05, weight mirroring: rate 0.01, decay 0.25, noise "
                    + "0.1, 0 pre-mirroring epochs)"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        #expect(try checkpoint.rule.mirroring == FeedbackMirroring(decay: 0.25))
        #expect(checkpoint.tensors["layer0.mirror"]?.shape == [64, 16])
        #expect(checkpoint.tensors["layer2.mirror"]?.shape == [12, 10])
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--pepita-mirror-rate", "0.2"],
            naming: "--pepita-mirror-rate 0.2 (checkpoint: 0.01)")
        let refusals: [([String], String)] = [
            (["--pepita-mirror"], "--pepita-mirror sets PEPITA; add --rule pepita"),
            (["--rule", "pepita", "--pepita-premirror", "1"], "add --pepita-mirror"),
            (
                ["--rule", "pepita", "--pepita-mirror", "--pepita-premirror", "1"],
                "--pepita-premirror 1 leaves no epoch of --epochs 1"
            ),
            (
                ["--rule", "pepita", "--pepita-mirror", "--pepita-mirror-rate", "-1"],
                "must be >= 0"
            ),
            (["--rule", "pepita", "--loss", "top-k:3"], "--loss set Signal Propagation's"),
        ]
        let fresh = checkpoints.appendingPathComponent("refused")
        for (arguments, message) in refusals {
            let (status, output) = try Self.run(Self.model(data, fresh, arguments))
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.contains(message), "\(arguments): \(output)")
        }
    }

    @Test func spikingNetworksTrainAndResume() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(
                data, checkpoints,
                [
                    "--model", "lif16,lif12", "--timesteps", "5", "--spike-learning", "surrogate",
                    "--spike-loss", "step", "--reset", "zero", "--learn-beta",
                ]))
        #expect(status == 0, "\(output)")
        #expect(output.contains("none: spiking networks read pixels in 0...1"), "\(output)")
        #expect(output.contains("spikes per step: block1"), "\(output)")
        #expect(
            output.contains(
                "spiking: 5 steps, direct encoding, surrogate learning (arctan, k 2.0), loss at "
                    + "every step, beta 0.95 (learned), threshold 1.0, zero reset"), "\(output)")
        #expect(output.contains("membrane"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        let settings = try checkpoint.model.description.spiking
        #expect(settings.timesteps == 5 && settings.learning == .surrogate)
        #expect(settings.lossTiming == .step && settings.neuron.reset == .zero)
        #expect(settings.learnBeta && !settings.learnThreshold)
        #expect(
            checkpoint.tensors.keys.contains { $0.hasSuffix("block0.beta") }
                && !checkpoint.tensors.keys.contains { $0.contains("threshold") },
            "\(checkpoint.tensors.keys.sorted())")
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--timesteps", "9"],
            naming: "--timesteps 9 (checkpoint: 5)")
        let refusals: [([String], String)] = [
            (["--timesteps", "5"], "set spiking layers, and the model mlp has none"),
            (["--model", "lif16", "--spike-learning", "current"], "is not one of voltage"),
            (["--model", "lif16", "--timesteps", "0"], "at least 1 time step"),
            (["--model", "lif16", "--spike-encoding", "poisson"], "is not one of direct"),
            (["--model", "lif16,dense8"], "is not spiking, while the first layer is"),
            (["--model", "snn-mlp", "--rule", "pepita"], "learn with Signal Propagation"),
            (["--model", "lif16", "--surrogate-slope", "4"], "add --spike-learning surrogate"),
        ]
        // A folder of its own, so that the refusals that need the data's shape are reached.
        let fresh = checkpoints.appendingPathComponent("refused")
        for (arguments, message) in refusals {
            let (status, output) = try Self.run(Self.model(data, fresh, arguments))
            #expect(status != 0, "\(arguments): \(output)")
            #expect(output.contains(message), "\(arguments): \(output)")
        }
    }

    /// `--time-chunk`: the blocks in step over chunks of steps, sequential, stored in the
    /// checkpoint; what needs the whole trains is refused.
    @Test func spikingNetworksTrainInChunksOfSteps() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(
                data, checkpoints,
                [
                    "--model", "lif16,lif12", "--timesteps", "6", "--time-chunk", "4",
                    "--spike-encoding", "rate",
                ]))
        #expect(status == 0, "\(output)")
        #expect(output.contains("subtract reset, 4 steps at a time"), "\(output)")
        #expect(output.contains("schedule sequential"), "\(output)")
        #expect(output.contains("spikes per step: block1"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        #expect(try checkpoint.model.description.spiking.timeChunk == 4)
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--time-chunk", "2"],
            naming: "--time-chunk 2 (checkpoint: 4)")
        let refusals: [([String], String)] = [
            (
                ["--model", "lif16", "--time-chunk", "2", "--reset", "zero"],
                "--reset zero learns from the whole train"
            ),
            (
                ["--model", "lif16", "--time-chunk", "2", "--schedule", "pipelined"],
                "batches cannot overlap: use --schedule sequential"
            ),
            (["--model", "lif16", "--time-chunk", "0"], "at least 1 time step"),
            (["--time-chunk", "2"], "set spiking layers, and the model mlp has none"),
        ]
        let fresh = checkpoints.appendingPathComponent("refused")
        for (arguments, message) in refusals {
            let (status, output) = try Self.run(Self.model(data, fresh, arguments))
            #expect(status != 0, "\(arguments): \(output)")
            #expect(output.contains(message), "\(arguments): \(output)")
        }
    }

    @Test func errorForwardPropagationTrainsAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(
                data, checkpoints,
                [
                    "--rule", "efp", "--efp-first-pass", "learn", "--model", "dense16,dense16",
                    "--k-row-shortcut",
                ]))
        // The first pass that learns takes the K-row shortcut, so the flag holds.
        #expect(status == 0, "\(output)")
        #expect(output.contains("rule: Error Forward-Propagation (first pass: learn)"), "\(output)")
        // Signal Propagation's network on its input: standardised pixels, every readout.
        #expect(!output.contains("reads pixels in 0...1"), "\(output)")
        #expect(output.contains("similarity@2"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: last))
        #expect(try checkpoint.rule == LearningRule(.efp, errorFirstPass: .learn))
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--efp-first-pass", "predict"],
            naming: "--efp-first-pass predict (checkpoint: learn)")
        let refusals: [([String], String)] = [
            (["--efp-first-pass", "learn"], "add --rule efp"),
            (["--rule", "efp", "--efp-first-pass", "twice"], "Valid values: predict, learn"),
            (
                ["--rule", "efp", "--readout", "goodness"],
                "--readout goodness is Forward-Forward's"
            ),
            (["--rule", "efp", "--k-row-shortcut"], "cannot hold under --rule efp"),
        ]
        for (arguments, message) in refusals {
            let (status, output) = try Self.run(Self.model(data, checkpoints, arguments))
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.contains(message), "\(arguments): \(output)")
        }
    }

    @Test func whatForwardForwardCannotTrainIsRefused() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let refusals: [([String], String)] = [
            (["--rule", "ff", "--model", "conv8,dense16"], "--rule ff trains dense layers only"),
            (["--rule", "ff", "--readout", "similarity"], "--readout similarity is Signal"),
            (["--readout", "goodness"], "--readout goodness is Forward-Forward's"),
            (["--ff-peer-weight", "0.1"], "add --rule ff"),
            (["--ff-negatives", "hard"], "add --rule ff"),
            (["--rule", "ff", "--ff-negatives", "worst"], "Valid values: random, hard"),
            (["--rule", "bp"], "--rule bp is not a learning rule"),
            (
                ["--rule", "ff", "--fixed-context", "--dense-norm", "batch"],
                "--fixed-context, --dense-norm set Signal Propagation's blocks"
            ),
        ]
        for (arguments, message) in refusals {
            let (status, output) = try Self.run(Self.model(data, checkpoints, arguments))
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.contains(message), "\(arguments): \(output)")
            #expect(!output.contains("epoch 1/"), "\(arguments) trained: \(output)")
        }
    }
}
