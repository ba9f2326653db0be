import ArgumentParser
import Foundation
import SigProp

/// Trains a network with Signal Propagation on an image classification data set.
@main
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a network with Signal Propagation (forward-only learning).",
        discussion: """
            Backend and device come from the environment: SIGPROP_BACKEND=auto|opencl|cpu (default auto: \
            the first OpenCL GPU, else the CPU fallback) and SIGPROP_DEVICE=<index or name> (see `swift run doctor`).
            """)

    @Option(help: "Model: mlp (dense blocks) or cnn (conv 32, conv 64, pool, conv 128, pool, dense 1024).")
    var model: String = "mlp"

    @Option(help: "Epochs to train.")
    var epochs: Int = 5

    @Option(help: "Samples per batch.")
    var batchSize: Int = 128

    @Option(help: "Learning rate of every block's optimizer.")
    var lr: Float = 5e-4

    @Option(help: "Optimizer of every block: adam, amsgrad or sgd.")
    var optimizer: String = "adam"

    @Option(help: "SGD momentum (with --optimizer sgd).")
    var momentum: Float = 0.9

    @Option(help: "Weight decay of every optimizer.")
    var weightDecay: Float = 0

    @Option(help: "Multiply the learning rate by --lr-gamma at these epochs (comma-separated, 1-based: 3,4 decays after epochs 3 and 4).")
    var lrMilestones: String = ""

    @Option(help: "Learning-rate decay factor at each milestone.")
    var lrGamma: Float = 0.1

    @Option(help: "Local loss: max-all (the reference's), max-rand, or top-k:K.")
    var loss: String = "max-all"

    @Option(help: "Prediction: output (the trained output layer) or similarity (nearest class target at the last block).")
    var readout: String = "output"

    @Option(help: "mlp: learning blocks (the signal block counts as the first).")
    var hiddenLayers: Int = 3

    @Option(help: "mlp: features per dense block.")
    var width: Int = 1024

    @Option(help: "Random seed: weights, data order and augmentation.")
    var seed: UInt64 = 1

    @Option(help: "Data set folder: MNIST-format IDX files (gzipped or not) or CIFAR-10 binary files.")
    var dataDir: String = Dataset.defaultDirectory

    @Option(help: "Use only the first N training samples (quick runs).")
    var limit: Int?

    @Option(help: "Training augmentation: random crop with this zero padding (0 = off).")
    var cropPadding: Int = 0

    @Flag(help: "Training augmentation: random horizontal flips.")
    var flip = false

    @Option(help: "Append one JSON line of metrics per epoch to this file.")
    var metrics: String?

    mutating func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard lr.isFinite, lr > 0 else { throw ValidationError("--lr must be a positive number, got \(lr)") }
        guard weightDecay.isFinite, weightDecay >= 0 else { throw ValidationError("--weight-decay must be >= 0, got \(weightDecay)") }
        guard ModelConfig.Kind(rawValue: model) != nil else {
            throw ValidationError("--model \(model) is not a model. Valid values: \(ModelConfig.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard OptimizerKind(rawValue: optimizer) != nil else {
            throw ValidationError("--optimizer \(optimizer) is not an optimizer. Valid values: \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard Readout(rawValue: readout) != nil else {
            throw ValidationError("--readout \(readout) is not a readout. Valid values: \(Readout.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
        guard cropPadding >= 0 else { throw ValidationError("--crop-padding must be >= 0, got \(cropPadding)") }
    }

    func run() throws {
        do {
            try train()
        } catch let error as SigPropError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as OpenCLError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as OpenCLBuildError {
            printError("\(error)")
            throw ExitCode.failure
        }
    }

    func train() throws {
        let selection = try BackendSelection(environment: ProcessInfo.processInfo.environment)
        let (device, warnings) = try selection.makeDevice()
        warnings.forEach { printError("warning: \($0)") }
        emit("backend: \(device.description)")

        var options = TrainingOptions()
        options.epochs = epochs
        options.batchSize = batchSize
        options.seed = seed
        options.loss = try LossChoice(parsing: loss)
        options.readout = Readout(rawValue: readout)!
        options.optimizer.kind = OptimizerKind(rawValue: optimizer)!
        options.optimizer.learningRate = lr
        options.optimizer.momentum = momentum
        options.optimizer.weightDecay = weightDecay
        options.optimizer.gamma = lrGamma
        options.optimizer.milestones = try lrMilestones.split(separator: ",").map { text in
            guard let epoch = Int(text.trimmingCharacters(in: .whitespaces)), epoch >= 1 else {
                throw SigPropError.configuration("--lr-milestones \(lrMilestones): each milestone must be an epoch number >= 1")
            }
            return epoch
        }
        options.augmentation.cropPadding = cropPadding
        options.augmentation.horizontalFlip = flip

        let directory = URL(fileURLWithPath: dataDir)
        let loadStart = Date()
        var trainSet = try Dataset.load(directory: directory, split: .train)
        var testSet = try Dataset.load(directory: directory, split: .test)
        let normalization = Normalization.standard(for: directory, dataset: trainSet)
        trainSet = try normalization.apply(to: trainSet)
        testSet = try normalization.apply(to: testSet)
        if let limit { trainSet = trainSet.prefix(limit) }
        emit(String(format: "data: %@ (%d training, %d test images of %dx%dx%d, %d classes; loaded in %.1f s)",
                     dataDir, trainSet.count, testSet.count, trainSet.channels, trainSet.height, trainSet.width, trainSet.classes,
                     Date().timeIntervalSince(loadStart)))

        var config = ModelConfig()
        config.kind = ModelConfig.Kind(rawValue: model)!
        config.inputShape = [trainSet.channels, trainSet.height, trainSet.width]
        config.classes = trainSet.classes
        config.hiddenLayers = hiddenLayers
        config.width = width
        let network = try Network(config: config, device: device, optimizer: options.optimizer, seed: seed)
        let trainer = try Trainer(network: network, options: options, train: trainSet, test: testSet)
        emit("model: \(config.kind.rawValue), \(network.blockCount) learning blocks + output layer, \(network.parameters.reduce(0) { $0 + $1.value.count }) parameters; \(trainer.batchesPerEpoch) batches of \(batchSize) per epoch; loss \(options.loss.name), \(options.optimizer.kind.rawValue) lr \(lr)")

        let terminal = isatty(STDOUT_FILENO) != 0
        for epoch in 0..<epochs {
            var lastPlainReport = Date()
            let result = try trainer.runEpoch(epoch) { progress in
                let line = String(format: "epoch %d/%d  batch %d/%d  %.0f samples/s  losses %@  ETA %.0f s",
                                  progress.epoch + 1, epochs, progress.batch, progress.batches, progress.samplesPerSecond,
                                  progress.blockLosses.map { String(format: "%.3f", $0) }.joined(separator: " "), progress.secondsLeft)
                if terminal {
                    print("\r\u{1B}[K" + line, terminator: "")
                    fflush(nil)  // all streams: stdout is not concurrency-safe to name in Swift 6
                } else if Date().timeIntervalSince(lastPlainReport) > 10 {
                    lastPlainReport = Date()
                    emit(line)
                }
            }
            if terminal { print("\r\u{1B}[K", terminator: "") }
            emit(String(format: "epoch %d/%d  %.1f s  %.0f samples/s  block losses %@  output loss %.3f  train acc %.2f%%  test acc %.2f%% (%@)",
                         result.epoch, epochs, result.seconds, result.samplesPerSecond,
                         result.blockLosses.map { String(format: "%.3f", $0) }.joined(separator: " "), result.outputLoss,
                         100 * result.trainAccuracy, 100 * result.testAccuracy, options.readout.rawValue))
            let others = result.readoutAccuracies.filter { $0.key != options.readout.rawValue && $0.key != "similarity" }
                .sorted { $0.key < $1.key }.map { String(format: "%@ %.2f%%", $0.key, 100 * $0.value) }
            emit("  other readouts: " + others.joined(separator: ", "))
            if let path = metrics { try appendMetrics(result, to: path) }
        }
    }

    func appendMetrics(_ metrics: EpochMetrics, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(metrics)
        line.append(UInt8(ascii: "\n"))
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw SigPropError.configuration("--metrics \(path): cannot create the file; check the folder exists and is writable")
            }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
    }
}

/// Prints a line and flushes, so progress shows at once when stdout is a pipe or a file.
func emit(_ line: String) {
    print(line)
    fflush(nil)
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(message)\n".replacingOccurrences(of: "error: warning: ", with: "warning: ").utf8))
}
