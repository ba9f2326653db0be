import Foundation

/// How a trained network predicts a class (the paper's three readouts).
public enum Readout: String, Sendable, Codable, CaseIterable {
    /// The trained output layer's argmax.
    case output
    /// The class whose target activations t_l(k) are most similar (dot product) to h_l, at
    /// the block `TrainingOptions.readoutBlock`.
    case similarity
    /// Whichever readout of the rule classifies the validation split best, chosen again
    /// after every epoch (`ReadoutSelection`); the output layer without a split.
    case adaptive
    /// Forward-Forward: the label whose embedding gives the highest goodness.
    case goodness
    /// Spiking networks: the output layer's mean membrane (`output` is its spike count).
    case membrane
}

/// Everything about a run that is not the model itself.
public struct TrainingOptions: Sendable, Codable, Equatable {
    public var epochs = 5
    public var batchSize = 128
    public var seed: UInt64 = 1
    public var loss: LossChoice = .maxAll
    public var optimizer = OptimizerSettings()
    public var readout: Readout = .adaptive
    /// The block (1 = the signal block) the `similarity` readout uses.
    public var readoutBlock = 1
    /// Training samples held out for validation (`ValidationSplit`); nil: none, as in
    /// checkpoints written before the split existed.
    public var validation: ValidationSize? = .automatic
    public var augmentation = AugmentationChoice()
    /// Run the target stream on one row per class where that is exact (per-sample norms).
    public var kRowShortcut = true

    public init() {}
}

/// The local loss by name, for flags and checkpoints.
public enum LossChoice: Sendable, Codable, Equatable {
    case maxAll, maxRandom
    case topK(Int)

    public var kind: LocalLossKind {
        switch self {
        case .maxAll: .maxAll
        case .maxRandom: .maxRandom
        case .topK(let k): .topK(k)
        }
    }

    /// `max-all`, `max-rand`, `top-k:K` (e.g. `top-k:3`).
    public init(parsing text: String) throws {
        switch text.lowercased() {
        case "max-all": self = .maxAll
        case "max-rand": self = .maxRandom
        case let other where other.hasPrefix("top-k"):
            let k = Int(other.dropFirst("top-k".count).drop { $0 == ":" || $0 == "=" }) ?? 0
            guard k >= 1 else {
                throw SigPropError.configuration(
                    "--loss \(text): top-k needs k >= 1, written top-k:K (e.g. top-k:3)")
            }
            self = .topK(k)
        default:
            throw SigPropError.configuration(
                "--loss \(text) is not a loss. Valid values: max-all (default), max-rand, top-k:K")
        }
    }

    public var name: String {
        switch self {
        case .maxAll: "max-all"
        case .maxRandom: "max-rand"
        case .topK(let k): "top-k:\(k)"
        }
    }
}

/// Training-set augmentation settings (Codable mirror of `Augmentation`).
public struct AugmentationChoice: Sendable, Codable, Equatable {
    public var cropPadding = 0
    public var horizontalFlip = false
    public init() {}
    var augmentation: Augmentation {
        Augmentation(randomCropPadding: cropPadding, horizontalFlip: horizontalFlip)
    }
}

/// One epoch's figures, as written to the metrics file.
public struct EpochMetrics: Sendable, Codable {
    public var epoch: Int
    public var blockLosses: [Double]
    public var outputLoss: Double
    public var trainAccuracy: Double
    public var testAccuracy: Double
    public var readoutAccuracies: [String: Double]
    /// Each readout's accuracy on the validation split (empty without one), and that of the
    /// readout the run predicts with (nil without one).
    public var validationAccuracies: [String: Double]
    public var validationAccuracy: Double?
    /// The readout `adaptive` chose this epoch (`ReadoutChoice.description`).
    public var adaptiveReadout: String
    /// The learning rate every block's optimizer stepped with this epoch (the schedule's).
    public var learningRate: Double
    public var seconds: Double
    public var samplesPerSecond: Double
    public var backend: String
    /// Memory after the epoch: device bytes in use (all devices, the storage pool included)
    /// and the process's resident set (0 where /proc is missing). The soak tests read them.
    public var deviceBytes: Int
    public var residentBytes: Int
    /// Spiking networks, per block (the signal block first), over the epoch's training
    /// samples on the input stream: spikes per unit per step, and the fraction of units that
    /// never fired (dead). Empty for other networks.
    public var spikeRates: [Double] = []
    public var deadFractions: [Double] = []
    /// Training over several ranks, per rank over the epoch's batches: bytes sent to other
    /// ranks per batch, and seconds spent waiting on them (`Pipeline.communication`). Empty
    /// for one process.
    public var rankBytesPerBatch: [Double] = []
    public var rankSecondsWaiting: [Double] = []
    /// PEPITA: the angle in degrees between −F and `(W_L ⋯ W_1)ᵀ` after the epoch
    /// (`Network.feedbackAngle`); nil under other rules and in a pipeline over ranks.
    public var feedbackAngle: Double?

    enum CodingKeys: String, CodingKey {
        case epoch
        case blockLosses = "block_losses"
        case outputLoss = "output_loss"
        case trainAccuracy = "train_accuracy"
        case testAccuracy = "test_accuracy"
        case readoutAccuracies = "readout_accuracies"
        case validationAccuracies = "validation_accuracies"
        case validationAccuracy = "validation_accuracy"
        case adaptiveReadout = "adaptive_readout"
        case learningRate = "learning_rate"
        case seconds
        case samplesPerSecond = "samples_per_second"
        case backend
        case deviceBytes = "device_bytes"
        case residentBytes = "resident_bytes"
        case spikeRates = "spike_rates"
        case deadFractions = "dead_fractions"
        case rankBytesPerBatch = "rank_bytes_per_batch"
        case rankSecondsWaiting = "rank_seconds_waiting"
        case feedbackAngle = "feedback_angle"
    }
}

/// Progress inside an epoch, for a progress line.
public struct BatchProgress: Sendable {
    public let epoch: Int
    public let batch: Int
    public let batches: Int
    public let samplesPerSecond: Double
    public let blockLosses: [Double]
    public let secondsLeft: Double
    /// Spiking networks, per block: spikes per unit per step over the epoch's batches so far
    /// (empty for other networks).
    public var spikeRates: [Double] = []
    /// How many processes (MPI ranks) train together.
    public var ranks = 1
}

/// Runs epochs over a data set.
public final class Trainer {
    public let network: Network
    public let options: TrainingOptions
    /// The samples trained on: the training set less the validation split.
    public let train: Dataset
    /// The held-out samples readouts are chosen on (nil: none), and which they are.
    public let validation: Dataset?
    public let split: ValidationSplit
    public let test: Dataset
    let order: BatchOrder
    /// Where and when each batch's stages run.
    public let pipeline: Pipeline

    /// `train` is the whole training set; `options.validation` of it is held out. Without a
    /// `schedule`, `Schedule.automatic` chooses one for the network and its devices. With a
    /// `distribution`, this process is one rank of several that train the network together
    /// (every rank builds the same network from the same seed and calls the same methods).
    public init(
        network: Network, options: TrainingOptions, train whole: Dataset, test: Dataset,
        schedule: Schedule? = nil, distribution: Distribution? = nil
    ) throws {
        split = try ValidationSplit(
            total: whole.count, size: options.validation, seed: options.seed)
        let (train, validation) = split.apply(to: whole)
        guard options.batchSize >= 1, options.batchSize <= train.count else {
            throw SigPropError.configuration(
                "--batch-size \(options.batchSize) must be between 1 and the training set size "
                    + "\(train.count)"
            )
        }
        guard train.featureCount == network.inputShape.reduce(1, *),
            train.classes <= network.classes
        else {
            throw SigPropError.configuration(
                "the data (\(train.channels)x\(train.height)x\(train.width), \(train.classes) "
                    + "classes) does not fit the model's input \(network.inputShape) "
                    + "with \(network.classes) classes"
            )
        }
        self.network = network
        self.options = options
        self.train = train
        self.validation = validation
        self.test = test
        let offers = network.readoutChoices.contains { choice in
            switch (options.readout, choice) {
            case (.output, _), (.adaptive, _), (.similarity, .similarity), (.goodness, .goodness),
                (.membrane, .membrane):
                true
            default: false
            }
        }
        guard offers else {
            throw SigPropError.configuration(
                "--readout \(options.readout.rawValue) is not a readout of \(network.rule), "
                    + "which offers \(Self.readoutNames(network.readoutChoices))")
        }
        guard
            network.rule.name != .sigprop || (1...network.blockCount).contains(options.readoutBlock)
        else {
            throw SigPropError.configuration(
                "--readout-block \(options.readoutBlock) is not a block: the model has blocks "
                    + "1...\(network.blockCount)"
            )
        }
        if distribution != nil, network.rule.choosesHardNegatives {
            throw SigPropError.configuration(
                "hard negatives are chosen with every layer's weights after the batch before, "
                    + "and over MPI ranks the other ranks hold them: train on one process, or "
                    + "with random negatives")
        }
        self.order = try BatchOrder(
            count: train.count, batchSize: options.batchSize, seed: options.seed)
        pipeline = try Pipeline(
            network: network, schedule: schedule, batchSize: options.batchSize,
            kRowShortcut: options.kRowShortcut, distribution: distribution)
    }

    public var schedule: Schedule { pipeline.schedule }

    /// Whether each batch's negatives are the network's hardest wrong labels
    /// (`LearningRule.choosesHardNegatives`).
    public var choosesHardNegatives: Bool { network.rule.choosesHardNegatives }

    public var batchesPerEpoch: Int { order.batchesPerEpoch }

    /// How an epoch ended.
    public enum EpochOutcome {
        case completed(EpochMetrics)
        /// `shouldStop` said so after this many batches of the epoch (all of them applied).
        case interrupted(batchesDone: Int)
    }

    /// The random draws of one batch (augmentation, dropout) come from a generator of their own,
    /// fixed by (seed, epoch, batch): a run resumed in the middle of an epoch draws exactly
    /// what an uninterrupted one would.
    func batchGenerator(_ purpose: UInt64, epoch: Int, batch: Int) -> SeededGenerator {
        var mixer = SeededGenerator(seed: options.seed ^ (purpose &* 0x9E37_79B9_7F4A_7C15))
        return SeededGenerator(
            seed: mixer.next() &+ UInt64(epoch) &* 0x1_0000_0001 &+ UInt64(batch))
    }

    /// Trains epoch `epoch` (0-based) from batch `startBatch` on and evaluates on the test set;
    /// `shouldStop` is asked between batches (Ctrl-C). The metrics of an epoch resumed in the
    /// middle cover the batches trained in this call.
    public func runEpoch(
        _ epoch: Int, startBatch: Int = 0, shouldStop: () -> Bool = { false },
        progress: (BatchProgress) -> Void = { _ in }
    ) throws -> EpochOutcome {
        let loss = LocalLoss(kind: options.loss.kind)
        let learningRate = options.optimizer.learningRate(epoch: epoch, of: options.epochs)
        let batches = order.batches(epoch: epoch)
        var lossSums = [Double](repeating: 0, count: network.stageCount)
        // Stages whose losses are the rule's (not a first pass's zeros), in order.
        let reported = network.stages.indices.filter { network.stages[$0].reportsLoss }
        var correct = 0
        var seen = 0
        var trained = 0
        // Per spiking block, the batches' spike rates weighted by their samples.
        var rateSums: [Double] = []
        let start = Date()
        var lastReport = Date.distantPast

        let activities = network.spiking?.activities ?? []
        for activity in activities { try activity.reset() }
        try pipeline.begin()
        let communicationBefore = pipeline.communication
        /// Adds a retired batch's losses and predictions to the epoch's, and reports progress.
        func account(_ batch: Pipeline.RetiredBatch) throws {
            for (stage, value) in batch.lossSums.enumerated() {
                guard value.isFinite else {
                    let name = network.stageName(stage)
                    throw SigPropError.configuration(
                        "training stopped: the loss of \(name) became \(value) at epoch "
                            + "\(epoch + 1), batch \(batch.index + 1). Lower --lr or check the "
                            + "data.")
                }
                lossSums[stage] += value
            }
            correct += batch.correct
            seen += batch.samples
            trained += 1
            if rateSums.isEmpty { rateSums = batch.spikeRates.map { _ in 0 } }
            for (block, rate) in batch.spikeRates.enumerated() {
                rateSums[block] += rate * Double(batch.samples)
            }
            if Date().timeIntervalSince(lastReport) > 0.25 || batch.index == batches.count - 1 {
                lastReport = Date()
                let elapsed = Date().timeIntervalSince(start)
                progress(
                    BatchProgress(
                        epoch: epoch, batch: batch.index + 1, batches: batches.count,
                        samplesPerSecond: Double(seen) / max(elapsed, 1e-9),
                        blockLosses: reported.map { lossSums[$0] / Double(trained) },
                        secondsLeft: elapsed / Double(trained)
                            * Double(batches.count - batch.index - 1),
                        spikeRates: rateSums.map { $0 / Double(max(seen, 1)) },
                        ranks: pipeline.rankCount))
            }
        }

        // Whatever ends the epoch, no batch still runs when it returns (see
        // `Pipeline.finishEnqueuedWork`); once every batch has retired it costs a synchronize
        // per stream.
        defer { pipeline.finishEnqueuedWork() }
        for (index, indices) in batches.enumerated() where index >= startBatch {
            if shouldStop() {
                for batch in try pipeline.drain() { try account(batch) }
                return .interrupted(batchesDone: index)
            }
            var (images, labels) = train.batch(indices)
            if options.augmentation.augmentation.isEnabled {
                var generator = batchGenerator(1, epoch: epoch, batch: index)
                options.augmentation.augmentation.apply(
                    images: &images, channels: train.channels, height: train.height,
                    width: train.width,
                    using: &generator)
            }
            var wrongLabels: [Int32]?
            if choosesHardNegatives {
                for batch in try pipeline.drain() { try account(batch) }
                wrongLabels = try network.hardestWrongLabels(images, labels: labels)
            }
            let dropout =
                network.description.hasDropout
                ? DropoutMasks(generator: batchGenerator(2, epoch: epoch, batch: index)) : nil
            for batch in try pipeline.submit(
                images: images, labels: labels, loss: loss, learningRate: learningRate,
                kRowShortcut: options.kRowShortcut, dropout: dropout,
                wrongLabels: wrongLabels,
                generator: batchGenerator(3, epoch: epoch, batch: index), index: index,
                epoch: epoch)
            {
                try account(batch)
            }
        }
        for batch in try pipeline.drain() { try account(batch) }
        let seconds = Date().timeIntervalSince(start)
        try pipeline.end()
        let (rankBytes, rankWaiting) = try rankCommunication(
            since: communicationBefore, batches: trained)
        try pipeline.shareState()
        // The checkpoint written after this epoch must not hold NaN or Inf weights.
        for parameter in network.parameters
        where try parameter.value.device.read(parameter.value).contains(where: { !$0.isFinite }) {
            throw SigPropError.configuration(
                "training stopped: parameter \(parameter.name) holds NaN or Inf after epoch "
                    + "\(epoch + 1); the last good checkpoint is kept. Lower --lr."
            )
        }
        let validationAccuracies = try validation.map { try evaluate($0) } ?? [:]
        let selection = ReadoutSelection(
            validationAccuracies: validationAccuracies, choices: network.readoutChoices,
            similarityBlock: options.readoutBlock)
        let accuracies = selection.naming(try evaluate(test))
        let validated = selection.naming(validationAccuracies)
        let means = reported.map { lossSums[$0] / Double(max(trained, 1)) }
        let spiking = try activities.compactMap { try $0.read() }
        return .completed(
            EpochMetrics(
                epoch: epoch + 1, blockLosses: Array(means.dropLast()), outputLoss: means.last ?? 0,
                trainAccuracy: Double(correct) / Double(max(seen, 1)),
                testAccuracy: accuracies[options.readout.rawValue] ?? 0,
                readoutAccuracies: accuracies,
                validationAccuracies: validated,
                validationAccuracy: validated[options.readout.rawValue],
                adaptiveReadout: selection.adaptive.description,
                learningRate: Double(learningRate), seconds: seconds,
                samplesPerSecond: Double(seen) / max(seconds, 1e-9),
                backend: network.devices.map(\.description).joined(separator: " + "),
                deviceBytes: network.devices.reduce(0) { $0 + $1.bytesInUse },
                residentBytes: Self.residentBytes(), spikeRates: spiking.map(\.rate),
                deadFractions: spiking.map(\.deadFraction), rankBytesPerBatch: rankBytes,
                rankSecondsWaiting: rankWaiting,
                // A pipeline over ranks holds other ranks' layers as they were built.
                feedbackAngle: (0..<network.stageCount).allSatisfy(pipeline.runsStage)
                    ? try network.feedbackAngle() : nil))
    }

    /// Every rank's bytes sent per batch and seconds waiting since `before` (collective; empty
    /// lists for one process).
    private func rankCommunication(
        since before: (bytesSent: Int, secondsWaiting: Double), batches: Int
    ) throws -> (bytesPerBatch: [Double], secondsWaiting: [Double]) {
        guard let group = pipeline.group else { return ([], []) }
        let now = pipeline.communication
        var figures = [Double](repeating: 0, count: 2 * group.size)
        figures[group.rank] = Double(now.bytesSent - before.bytesSent) / Double(max(batches, 1))
        figures[group.size + group.rank] = now.secondsWaiting - before.secondsWaiting
        try group.sum(&figures)
        return (Array(figures[..<group.size]), Array(figures[group.size...]))
    }

    /// The process's resident set size in bytes (Linux /proc; 0 elsewhere).
    public static func residentBytes() -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
            let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Accuracy of every readout of the network's rule on `dataset`, keyed by
    /// `ReadoutChoice.description`: "output", "similarity@l" for each block l (1-based) under
    /// Signal Propagation, "goodness" under Forward-Forward. Batches of `batchSize` (default:
    /// the training's, so evaluation never needs more memory than training).
    public func evaluate(_ dataset: Dataset, batchSize: Int? = nil) throws -> [String: Double] {
        let batchSize = batchSize ?? options.batchSize
        let predict = try network.predictor()
        var correct = [String: Int]()
        for start in stride(from: 0, to: dataset.count, by: batchSize) {
            let indices = Array(start..<min(start + batchSize, dataset.count))
            let (images, labels) = dataset.batch(indices)
            for (name, predicted) in try predict(images, indices.count) {
                correct[name, default: 0] += zip(predicted, labels).filter { $0 == Int($1) }.count
            }
        }
        return correct.mapValues { Double($0) / Double(max(dataset.count, 1)) }
    }

    /// "a, b and c" of the readouts' `--readout` names.
    static func readoutNames(_ choices: [ReadoutChoice]) -> String {
        let names =
            choices.map { choice -> String in
                if case .similarity = choice { return Readout.similarity.rawValue }
                return choice.description
            }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            + [Readout.adaptive.rawValue]
        return names.dropLast().joined(separator: ", ") + " and " + names.last!
    }

    static func argmax(_ values: [Float], columns: Int) -> [Int] {
        stride(from: 0, to: values.count, by: columns).map { start in
            var best = start
            for i in start..<(start + columns) where values[i] > values[best] { best = i }
            return best - start
        }
    }
}
