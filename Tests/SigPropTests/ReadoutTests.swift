import Foundation
import Testing

@testable import SigProp

/// The validation split, the readout `adaptive` chooses on it, the best checkpoint and early
/// stopping.
@Suite struct ReadoutTests {
    /// Ten classes of 8x8 images: a fixed random pattern per class plus uniform noise of
    /// amplitude `noise`, labels drawn at random. With noise 3 the readouts end far apart
    /// (similarity at the first block ahead by several points), so a wrong choice shows.
    static func patterns(count: Int, seed: UInt64, noise: Float = 3) throws -> Dataset {
        var patternGenerator = SeededGenerator(seed: 0)
        let patterns = (0..<10).map { _ in patternGenerator.uniform(64, in: -1...1) }
        var generator = SeededGenerator(seed: seed)
        var images: [Float] = []
        var labels: [Int32] = []
        for _ in 0..<count {
            let label = Int.random(in: 0..<10, using: &generator)
            images += patterns[label].map {
                $0 + noise * Float.random(in: -1...1, using: &generator)
            }
            labels.append(Int32(label))
        }
        return try Dataset(
            images: images, labels: labels, channels: 1, height: 8, width: 8, classes: 10)
    }

    /// The readouts the metrics name (not the `--readout` aliases) and their accuracies.
    static func readouts(_ accuracies: [String: Double]) -> [String: Double] {
        accuracies.filter { $0.key == "output" || $0.key.hasPrefix("similarity@") }
    }

    @Test func validationSizesParseAndResolve() throws {
        #expect(try ValidationSize.parse("auto") == .automatic)
        #expect(try ValidationSize.parse("5000") == .count(5000))
        #expect(try ValidationSize.parse("0.1") == .fraction(0.1))
        #expect(try ValidationSize.parse("0") == nil)
        #expect(try ValidationSize.parse("none") == nil)
        for bad in ["-3", "1.5", "ten", "1.0"] {
            #expect { _ = try ValidationSize.parse(bad) } throws: {
                "\($0)".contains("--validation \(bad)") && "\($0)".contains("fraction")
            }
        }
        // auto: 10% up to 2000 from 1000 samples on, none below.
        #expect(ValidationSize.automatic.count(of: 999) == 0)
        #expect(ValidationSize.automatic.count(of: 1000) == 100)
        #expect(ValidationSize.automatic.count(of: 15000) == 1500)
        #expect(ValidationSize.automatic.count(of: 60000) == 2000)
        // A checkpoint's recorded split fixes the count a resumed run holds out.
        let recorded = Checkpoint(tensors: [:], metadata: ["validation_split": "5000 of 60000"])
        #expect(recorded.recordedValidationCount == 5000)
        #expect(Checkpoint(tensors: [:], metadata: [:]).recordedValidationCount == nil)
        #expect(ValidationSize.fraction(0.1).count(of: 512) == 51)
        #expect(ValidationSize.fraction(0.001).count(of: 512) == 1)
        #expect { _ = try ValidationSplit(total: 100, size: .count(100), seed: 1) } throws: {
            "\($0)".contains("leaving none to train on")
        }
    }

    /// Options are stored in checkpoints as JSON: the size round-trips as the flag's text, and
    /// options written before the split existed load as no split.
    @Test func checkpointOptionsKeepTheSizeAndOldOnesHaveNone() throws {
        for size in [ValidationSize.automatic, .count(700), .fraction(0.25)] {
            var options = TrainingOptions()
            options.validation = size
            let decoded = try JSONDecoder().decode(
                TrainingOptions.self, from: try JSONEncoder().encode(options))
            #expect(decoded.validation == size)
        }
        var old = try #require(
            try JSONSerialization.jsonObject(with: try JSONEncoder().encode(TrainingOptions()))
                as? [String: Any])
        #expect(old["validation"] as? String == "auto")
        old["validation"] = nil
        let decoded = try JSONDecoder().decode(
            TrainingOptions.self, from: try JSONSerialization.data(withJSONObject: old))
        #expect(decoded.validation == nil)
    }

    @Test func splitIsSeededDisjointAndCoversTheTrainingSet() throws {
        let split = try ValidationSplit(total: 3000, size: .automatic, seed: 1)
        #expect(split.validation.count == 300 && split.training.count == 2700)
        #expect(Set(split.validation).isDisjoint(with: split.training))
        #expect((split.validation + split.training).sorted() == Array(0..<3000))
        #expect(try ValidationSplit(total: 3000, size: .automatic, seed: 1) == split)
        #expect(try ValidationSplit(total: 3000, size: .automatic, seed: 2) != split)
        // Not a block at either end: a drawn sample.
        #expect(split.validation != Array(0..<300) && split.validation != Array(2700..<3000))

        // The trainer trains on the training part only and validates on the rest.
        let data = try Self.patterns(count: 3000, seed: 1)
        var options = TrainingOptions()
        options.batchSize = 32
        let config = TestNetwork(
            description: .mlp(width: 16), inputShape: [1, 8, 8], classes: 10)
        let trainer = try Trainer(
            network: try config.build(try TestBackend.cpu.device(), seed: 3),
            options: options, train: data, test: try Self.patterns(count: 100, seed: 2))
        #expect(trainer.split == split)
        let validation = try #require(trainer.validation)
        #expect(trainer.train.images == data.batch(split.training).images)
        #expect(trainer.train.labels == data.batch(split.training).labels)
        #expect(validation.images == data.batch(split.validation).images)
    }

    @Test func adaptiveChoosesTheBestValidationReadoutTheOutputLayerIncluded() {
        func choice(_ accuracies: [String: Double]) -> String {
            ReadoutSelection(
                validationAccuracies: accuracies, choices: ReadoutChoice.all(blockCount: 3),
                similarityBlock: 1
            ).adaptive.description
        }
        let blocks = ["similarity@1": 0.80, "similarity@2": 0.90, "similarity@3": 0.85]
        #expect(choice(blocks.merging(["output": 0.70]) { $1 }) == "similarity@2")
        #expect(choice(blocks.merging(["output": 0.95]) { $1 }) == "output")
        // Ties go to the readout listed first: the output layer, then the earlier block.
        #expect(choice(blocks.merging(["output": 0.90]) { $1 }) == "output")
        #expect(
            choice(blocks.merging(["output": 0.5, "similarity@3": 0.90]) { $1 }) == "similarity@2")
        // Without a validation split: the output layer.
        #expect(choice([:]) == "output")

        let selection = ReadoutSelection(
            validationAccuracies: blocks, choices: ReadoutChoice.all(blockCount: 3),
            similarityBlock: 3)
        let named = selection.naming(blocks.merging(["output": 0.7]) { $1 })
        #expect(named["adaptive"] == 0.90 && named["similarity"] == 0.85)
        // Forward-Forward's readouts: the linear classifier and the goodness.
        let forwardForward = ReadoutSelection(
            validationAccuracies: ["output": 0.8, "goodness": 0.85],
            choices: [.output, .goodness], similarityBlock: 1)
        #expect(forwardForward.adaptive == .goodness)
        #expect(forwardForward.naming(["output": 0.8, "goodness": 0.85])["similarity"] == nil)
    }

    /// The default readout on held-out data generalises: after every epoch but the first (near
    /// chance, where readouts differ by noise) its test accuracy is within half a point of the
    /// best single readout's, and the choice is the best readout on the validation split.
    /// CPU only: the choice is the same code on every backend, and the kernels are tested
    /// elsewhere.
    @Test func defaultReadoutIsWithinHalfAPointOfTheBestReadout() throws {
        let config = TestNetwork(
            description: .mlp(width: 32), inputShape: [1, 8, 8], classes: 10)
        var options = TrainingOptions()
        options.batchSize = 32
        let trainer = try Trainer(
            network: try config.build(
                try TestBackend.cpu.device(), optimizer: options.optimizer, seed: 3),
            options: options, train: try Self.patterns(count: 3000, seed: 1),
            test: try Self.patterns(count: 1000, seed: 2))
        #expect(trainer.validation?.count == 300, "the default holds out 10% of 3000")
        for epoch in 0..<5 {
            guard case .completed(let metrics) = try trainer.runEpoch(epoch) else {
                Issue.record("epoch \(epoch + 1) did not complete")
                return
            }
            let validation = Self.readouts(metrics.validationAccuracies)
            let test = Self.readouts(metrics.readoutAccuracies)
            #expect(validation.count == 4 && test.count == 4)
            let bestOnValidation = try #require(validation.max { $0.value < $1.value })
            #expect(
                validation[metrics.adaptiveReadout] == bestOnValidation.value,
                "epoch \(epoch + 1): chose \(metrics.adaptiveReadout); validation \(validation)")
            #expect(metrics.validationAccuracy == bestOnValidation.value)
            #expect(metrics.testAccuracy == test[metrics.adaptiveReadout])
            let shortfall = try #require(test.values.max()) - metrics.testAccuracy
            if epoch > 0 {
                #expect(
                    shortfall <= 0.005 + 1e-9,
                    "epoch \(epoch + 1): \(metrics.adaptiveReadout) chosen; on test \(test)")
            }
        }
    }

    /// Each readout predicts the argmax of its scores: at each block the dot product of the
    /// sample's output with each class's target, here on the host from `features` and
    /// `classTargets`, and the output layer's logits of the last block's output. The
    /// predictor takes the blocks one at a time and drops each output when it is used.
    @Test(arguments: TestBackend.available)
    func eachReadoutPredictsTheArgmaxOfItsScores(_ backend: TestBackend) throws {
        let config = TestNetwork(
            description: try NetworkDescription(layerList: "conv4,pool,conv6,avgpool2,dense12"),
            inputShape: [1, 8, 8], classes: 10)
        let network = try config.build(
            try backend.device(), optimizer: TrainingOptions().optimizer, seed: 5)
        let count = 40
        let (images, _) = try Self.patterns(count: count, seed: 4).batch(Array(0..<count))
        let predicted = try network.predictor()(images, count)
        let features = try network.features(images: images, count: count)
        let targets = try network.classTargets()
        #expect(features.count == 3 && targets.count == 3)
        for (block, (h, t)) in zip(features, targets).enumerated() {
            let (outputs, classTargets) = (try h.device.read(h), try t.device.read(t))
            let width = h.columns
            let scores = (0..<count).map { i in
                (0..<10).map { c in
                    (0..<width).reduce(0.0) {
                        $0 + Double(outputs[i * width + $1]) * Double(classTargets[c * width + $1])
                    }
                }
            }
            let name = ReadoutChoice.similarity(block: block + 1).description
            let chosen = try #require(predicted[name])
            #expect(chosen.count == count)
            for (i, row) in scores.enumerated() {
                // The device's sums round differently: a class within rounding of the
                // best is an argmax too.
                let best = row.max()!
                let scale = row.map(abs).max()! + 1
                #expect(
                    best - row[chosen[i]] <= 1e-5 * scale,
                    "\(name), sample \(i): chose \(chosen[i]) of scores \(row)")
            }
        }
        let logits = try network.logits(features.last!)
        #expect(
            predicted["output"] == Trainer.argmax(try logits.device.read(logits), columns: 10))
    }

    static func metrics(_ url: URL) throws -> [EpochMetrics] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8))
        }
    }

    /// Runs `train` to its end; its exit status and everything it printed.
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let output = Pipe()
        let process = try ProcessTests.launch(arguments, output: output, errors: output)
        let text = String(
            decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// On random labels the validation accuracy wanders (with seed 4 it peaks at epoch 4 of 7
    /// here): the run keeps the checkpoint of the first epoch of the best validation accuracy
    /// as best.safetensors, stops three epochs after it without a better one, and says so.
    /// Early stopping without a split is refused.
    @Test func bestCheckpointIsTheBestEpochsAndEarlyStopStops() throws {
        let (data, checkpoints) = try ProcessTests.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let metricsURL = checkpoints.deletingLastPathComponent().appendingPathComponent("m.jsonl")
        let common = [
            "--width", "32", "--batch-size", "16", "--data-dir", data.path, "--checkpoint-dir",
            checkpoints.path,
        ]
        let run = try Self.run(
            common + [
                "--epochs", "40", "--early-stop", "3", "--validation", "128", "--seed", "4",
                "--metrics", metricsURL.path,
            ])
        #expect(run.status == 0, "\(run.output)")
        let epochs = try Self.metrics(metricsURL)
        let accuracies = try epochs.map { try #require($0.validationAccuracy) }
        let best = try #require(accuracies.firstIndex(of: accuracies.max() ?? -1)) + 1
        #expect(epochs.count == best + 3, "validation accuracy per epoch: \(accuracies)")
        #expect(run.output.contains("early stop"), "\(run.output)")
        let bestCheckpoint = try Checkpoint(
            contentsOf: checkpoints.appendingPathComponent("best.safetensors"))
        let last = try Checkpoint(
            contentsOf: checkpoints.appendingPathComponent("last.safetensors"))
        #expect(try bestCheckpoint.epochs == best)
        #expect(try last.epochs == epochs.count)
        #expect(try last.bestEpoch == BestEpoch(epoch: best, accuracy: accuracies[best - 1]))
        #expect(bestCheckpoint.tensors.mapValues(\.values) != last.tensors.mapValues(\.values))
        for epoch in epochs {
            let validation = Self.readouts(epoch.validationAccuracies)
            #expect(validation[epoch.adaptiveReadout] == validation.values.max())
        }

        let refused = try Self.run(
            common + ["--epochs", "2", "--early-stop", "2", "--validation", "0", "--overwrite"])
        #expect(refused.status != 0)
        #expect(
            refused.output.contains("--early-stop needs a validation split"), "\(refused.output)")
    }

    /// A run resumed after epoch 1 trains on the same samples as one run straight through
    /// (bit-identical weights and validation figures); a resume that would draw another split
    /// (another --validation, or another training set size) is refused naming both.
    @Test func resumeKeepsTheSplit() throws {
        let (data, checkpoints) = try ProcessTests.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let straight = root.appendingPathComponent("straight")
        let common = ["--width", "32", "--batch-size", "16", "--data-dir", data.path]
        let whole = try Self.run(
            common + [
                "--epochs", "2", "--validation", "0.2", "--checkpoint-dir", straight.path,
                "--metrics", root.appendingPathComponent("straight.jsonl").path,
            ])
        #expect(whole.status == 0, "\(whole.output)")
        let first = try Self.run(
            common + ["--epochs", "1", "--validation", "0.2", "--checkpoint-dir", checkpoints.path])
        #expect(first.status == 0, "\(first.output)")
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors").path
        let resumed = try Self.run(
            common + [
                "--epochs", "2", "--resume", checkpoint, "--checkpoint-dir", checkpoints.path,
                "--metrics", root.appendingPathComponent("resumed.jsonl").path,
            ])
        #expect(resumed.status == 0, "\(resumed.output)")
        let weights = try [checkpoints, straight].map {
            try Checkpoint(contentsOf: $0.appendingPathComponent("last.safetensors")).tensors
                .mapValues(\.values)
        }
        #expect(weights[0] == weights[1])
        let straightLast = try #require(
            try Self.metrics(root.appendingPathComponent("straight.jsonl")).last)
        let resumedLast = try #require(
            try Self.metrics(root.appendingPathComponent("resumed.jsonl")).last)
        #expect(straightLast.validationAccuracies == resumedLast.validationAccuracies)

        let otherSize = try Self.run(
            common + ["--epochs", "3", "--resume", checkpoint, "--validation", "50"])
        #expect(otherSize.status != 0)
        #expect(
            otherSize.output.contains("--validation 50 (checkpoint: 0.2)"), "\(otherSize.output)")
        let otherData = try Self.run(
            common + ["--epochs", "3", "--resume", checkpoint, "--limit", "400"])
        #expect(otherData.status != 0)
        // The data settings are checked first: another --limit is refused by name.
        #expect(
            otherData.output.contains("--limit 400 (checkpoint: none, every sample)"),
            "\(otherData.output)")
    }
}
