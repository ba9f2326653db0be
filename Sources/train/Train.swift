import ArgumentParser
import Foundation
import SigProp
import SigPropMPI

/// Trains a network with a forward-only rule (Signal Propagation by default) on an image
/// classification data set.
@main
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Train a network with forward-only learning: Signal Propagation, Error "
            + "Forward-Propagation, Forward-Forward or PEPITA.",
        discussion: """
            Backend and devices come from the environment: SIGPROP_BACKEND=auto|opencl|cpu (default auto: \
            the first OpenCL GPU, else the CPU fallback), SIGPROP_DEVICE=<index or name>[,<index or name>...] \
            (see `swift run doctor`), and SIGPROP_SPLIT=N to divide each device into N equal devices. With \
            several devices the blocks are spread over them in contiguous groups of balanced work.
            """)

    // Options that define the run: taken from the checkpoint with --resume, where giving a
    // different value is an error. Their defaults are in `TrainingOptions` and `NetworkDescription`.
    @Option(
        help: ArgumentHelp(
            """
            Learning rule: sigprop (Signal Propagation, default), efp (Error \
            Forward-Propagation: Signal Propagation's blocks learning in a second pass whose \
            target stream is the output error of a first pass, see --efp-first-pass), ff \
            (Forward-Forward: the label written over the first K inputs, each dense layer \
            telling positive from negative samples by its goodness) or pepita (PEPITA: a \
            second pass with the input modulated by the output error, each dense layer \
            learning from the difference). efp keeps sigprop's defaults. ff changes the \
            defaults to its paper's: model dense1000,dense1000,dense1000, batch 100, SGD lr \
            1e-3 momentum 0.9 weight decay 3e-4 with a linear cooldown over the second half, \
            pixels in 0...1 unstandardised, readouts output (linear classifier) \
            and goodness. pepita to its: model dense1024,dropout0.1, batch 64, SGD lr 0.01 \
            momentum 0.9, x0.1 at epochs 60 and 90, pixels in 0...1, readout output.
            """, valueName: "sigprop|efp|ff|pepita"))
    var rule: String?

    @Option(
        help: ArgumentHelp(
            """
            efp: the first pass of a batch. predict (default): the input stream only, no \
            learning, as the authors' LoopBack model; learn: a Signal Propagation pass with \
            the target whose blocks learn, as their ForwardLoopBack.
            """, valueName: "predict|learn"))
    var efpFirstPass: String?

    @Option(
        parsing: .unconditional,
        help:
            "pepita: scale of the fixed feedback matrix F, uniform in ±scale·sqrt(6/inputs). Default 0.05."
    )
    var pepitaFeedbackScale: Float?

    @Flag(
        help: ArgumentHelp(
            """
            pepita: weight mirroring (Srinivasan et al. 2024): F becomes -(B_1 ... B_L), one \
            factor per layer, each learning to mirror its layer's weights from the layer's \
            response to noise after every batch, so that the input moves against the error \
            along the network's own weights. F keeps the deviation --pepita-feedback-scale \
            gives it.
            """))
    var pepitaMirror = false

    @Option(
        parsing: .unconditional,
        help: "pepita --pepita-mirror: the factors' learning rate. Default 0.01.")
    var pepitaMirrorRate: Float?

    @Option(
        parsing: .unconditional,
        help: "pepita --pepita-mirror: the factors' weight decay. Default 1e-4.")
    var pepitaMirrorDecay: Float?

    @Option(
        help: ArgumentHelp(
            "pepita --pepita-mirror: epochs at the start in which only the factors learn. Default 0.",
            valueName: "epochs"))
    var pepitaPremirror: Int?

    @Option(
        help: ArgumentHelp(
            """
            pepita --pepita-mirror: after the pre-mirroring epochs the factors mirror in every \
            N-th epoch only. Default 1 (every epoch).
            """, valueName: "N"))
    var pepitaMirrorEvery: Int?

    @Option(
        parsing: .unconditional,
        help: "ff: goodness threshold per unit of a layer's width. Default 1.")
    var ffThreshold: Float?

    @Option(
        parsing: .unconditional,
        help: "ff: weight of the peer normalisation loss (0 = off). Default 0.03.")
    var ffPeerWeight: Float?

    @Option(
        parsing: .unconditional,
        help:
            "ff: the linear classifier's learning rate (its schedule is the layers'). Default 0.01."
    )
    var ffClassifierLr: Float?

    @Option(
        help: ArgumentHelp(
            """
            ff: a negative row's wrong label. random (default): drawn among the other \
            classes; hard: each sample's wrong label of highest goodness, chosen per batch \
            with the current weights (a goodness pass over all labels; batches do not \
            overlap).
            """, valueName: "random|hard"))
    var ffNegatives: String?

    @Option(
        help: ArgumentHelp(
            """
            Model: a preset (\(NetworkDescription.presetNames.joined(separator: ", "))), a layer \
            list (conv128,conv256,pool,dense1024) or a JSON file of a network description. \
            Layers: \(NetworkDescription.Layer.grammar). Default mlp.
            """, valueName: "preset|layers|file.json"))
    var model: String?

    @Option(
        parsing: .unconditional,
        help: "mlp: learning blocks (the signal block counts as the first). Default 3.")
    var hiddenLayers: Int?

    @Option(parsing: .unconditional, help: "mlp: features per dense block. Default 1024.")
    var width: Int?

    @Option(
        parsing: .unconditional,
        help: "Scale the width of every dense and conv layer of the model. Default 1.")
    var widthMultiplier: Double?

    @Flag(
        help: """
            Print each block of the model (shapes, parameters, multiply-adds, device) and the \
            memory training takes on each device, then exit.
            """)
    var describe = false

    @Option(help: "Norm in dense blocks: layer, batch or none. Default layer.")
    var denseNorm: String?

    @Option(help: "Norm in conv blocks: instance, batch or none. Default instance.")
    var convNorm: String?

    @Option(
        parsing: .unconditional,
        help: """
            Dropout probability after every learning block but the last (0 = off); in a layer \
            list, dropout<P> places it. Default 0.
            """)
    var dropout: Float?

    @Flag(help: "Keep the signal's context projection fixed at its random init (not learned).")
    var fixedContext = false

    @Flag(
        inversion: .prefixedNo,
        help: """
            Pool the partial window at the edge of an image that a pool does not divide (7x7 \
            to 4x4), as PyTorch's ceil_mode, instead of dropping it (7x7 to 3x3). Default on \
            for the vgg presets, off otherwise.
            """)
    var ceilPools: Bool?

    @Option(
        parsing: .unconditional,
        help: "Spiking models: time steps each image is shown for. Default 25.")
    var timesteps: Int?

    @Option(
        help: ArgumentHelp(
            """
            Spiking models: how the image reaches the first block over the steps: direct \
            (default: the pixels as the current at every step), rate (Bernoulli spikes of \
            the pixels' probability, seeded) or latency (one spike per pixel, the brightest \
            first).
            """, valueName: "direct|rate|latency"))
    var spikeEncoding: String?

    @Option(
        help: ArgumentHelp(
            """
            Spiking models: what each block's local loss reads, averaged over the steps: \
            voltage (default: the membrane alone, no surrogate) or surrogate (a smooth spike \
            taken from the membrane before the spike, see --surrogate).
            """, valueName: "voltage|surrogate"))
    var spikeLearning: String?

    @Option(
        help: ArgumentHelp(
            """
            Spiking models: when each block's local loss is taken: mean (default: once, on \
            the time mean) or step (at every step on that step's values, averaged).
            """, valueName: "mean|step"))
    var spikeLoss: String?

    @Option(
        help: ArgumentHelp(
            "Spiking models, --spike-learning surrogate: arctan (default) or fast-sigmoid.",
            valueName: "arctan|fast-sigmoid"))
    var surrogate: String?

    @Option(
        parsing: .unconditional,
        help: "Spiking models: the surrogate's sharpness k. Default 2 (arctan), 25 (fast-sigmoid).")
    var surrogateSlope: Float?

    @Option(
        parsing: .unconditional, help: "Spiking models: membrane decay per step. Default 0.95.")
    var beta: Float?

    @Option(parsing: .unconditional, help: "Spiking models: firing threshold. Default 1.")
    var spikeThreshold: Float?

    @Option(
        help: ArgumentHelp(
            "Spiking models: a spike subtracts the threshold (default) or zeroes the membrane.",
            valueName: "subtract|zero"))
    var reset: String?

    @Flag(help: "Spiking models: every spiking layer learns its membrane decay (one per layer).")
    var learnBeta = false

    @Flag(help: "Spiking models: every spiking layer learns its threshold (one per layer).")
    var learnThreshold = false

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            """
            Spiking models: run the blocks in step over chunks of this many time steps, so \
            memory holds one chunk's spikes whatever --timesteps is (sequential schedule, one \
            device, subtract reset, fixed neurons, loss on the time mean). Default: each block \
            runs all the steps in turn.
            """, valueName: "steps"))
    var timeChunk: Int?

    @Flag(
        inversion: .prefixedNo,
        help:
            ArgumentHelp(
                "Run the target stream on one row per class where that is exact (per-sample norms, no "
                    + "dropout; under --rule efp, the first pass that learns); off otherwise.")
    )
    var kRowShortcut: Bool?

    @Option(parsing: .unconditional, help: "Samples per batch. Default 128.")
    var batchSize: Int?

    @Option(
        parsing: .unconditional, help: "Learning rate of every block's optimizer. Default 5e-4.")
    var lr: Float?

    @Option(help: "Optimizer of every block: adam, amsgrad or sgd. Default adam.")
    var optimizer: String?

    @Option(parsing: .unconditional, help: "SGD momentum (with --optimizer sgd). Default 0.9.")
    var momentum: Float?

    @Option(parsing: .unconditional, help: "Weight decay of every optimizer. Default 0.")
    var weightDecay: Float?

    @Option(
        help:
            ArgumentHelp(
                "Multiply the learning rate by --lr-gamma after these epochs (comma-separated: 3,4 "
                    + "decays after epochs 3 and 4). Default none.")
    )
    var lrMilestones: String?

    @Option(
        parsing: .unconditional, help: "Learning-rate decay factor at each milestone. Default 0.1.")
    var lrGamma: Float?

    @Option(
        parsing: .unconditional,
        help: """
            Anneal the learning rate to this value along a cosine over --epochs (PyTorch's \
            CosineAnnealingLR, stepped each epoch). Default off.
            """)
    var lrCosineTo: Float?

    @Option(help: "Local loss: max-all (the reference's), max-rand, or top-k:K. Default max-all.")
    var loss: String?

    @Option(
        parsing: .unconditional,
        help: "Random seed: weights, data order and augmentation. Default 1.")
    var seed: UInt64?

    @Option(
        parsing: .unconditional,
        help: "Training augmentation: random crop with this zero padding (0 = off). Default 0.")
    var cropPadding: Int?

    @Flag(help: "Training augmentation: random horizontal flips.")
    var flip = false

    @Option(
        help: """
            Training samples held out for validation: a count (5000), a fraction (0.1), auto, or \
            0 (none). The adaptive readout, best.safetensors and --early-stop choose on them. \
            Default auto: 10% of the training set, at most 2000, for sets of 1000 or more; \
            none below.
            """)
    var validation: String?

    // Options free to change between runs.
    @Option(
        parsing: .unconditional,
        help: "Epochs to train in total (a resumed run continues up to this count).")
    var epochs: Int = 5

    @Option(
        help: """
            Prediction: adaptive (default: whichever readout of the rule does best on the \
            validation split, chosen after every epoch; the output layer without a split), \
            output (the trained output layer; under ff the linear classifier), similarity \
            (sigprop: nearest class target at --readout-block) or goodness (ff: the label of \
            highest goodness).
            """
    )
    var readout: String = Readout.adaptive.rawValue

    @Option(
        parsing: .unconditional,
        help: "The block the similarity readout uses (1 = the signal block).")
    var readoutBlock: Int = 1

    @Option(
        help: """
            Data set folder: MNIST-format IDX files (gzipped or not) or CIFAR-10 binary files. \
            Default \(Dataset.defaultDirectory).
            """)
    var dataDir: String?

    @Option(parsing: .unconditional, help: "Use only the first N training samples (quick runs).")
    var limit: Int?

    @Option(help: "Append one JSON line of metrics per epoch to this file.")
    var metrics: String?

    @Option(
        help: """
            Write <folder>/last.safetensors (weights, optimizer state, progress) after every \
            epoch, and <folder>/best.safetensors after each epoch of a better validation accuracy.
            """
    )
    var checkpointDir: String = "checkpoints"

    @Option(
        help: """
            Stop after this many epochs without a better validation accuracy (needs a validation \
            split). Default: off.
            """
    )
    var earlyStop: Int?

    @Option(
        help: """
            Continue from this checkpoint: the model, the training options and the data \
            (--data-dir, --limit, normalisation) come from it.
            """)
    var resume: String?

    @Flag(
        help: """
            Start a new run even though --checkpoint-dir holds a checkpoint, replacing it \
            (without it, a new run there is refused).
            """)
    var overwrite = false

    @Option(
        help: """
            auto (default: pipelined, except on GPUs for networks whose blocks are too short to \
            overlap), pipelined (a stream per block; a block learns while the next computes, \
            and the next batch enters while later blocks work) or sequential (one block after \
            another, one batch at a time, as the reference). Same numbers either way.
            """)
    var schedule: String = "auto"

    @Option(
        parsing: .unconditional,
        help:
            "pipelined: batches in flight at most. Default: one per stage (blocks + output layer).")
    var pipelineDepth: Int?

    @Option(
        help: """
            Train as one rank of several started by mpirun (mpirun -np N train --distributed \
            pipeline ...): pipeline (the stages spread over the ranks, only activations cross; \
            the weights are those of one process) or data (every rank trains on its share of \
            each batch and the blocks' gradients are averaged). Rank 0 prints and writes the \
            checkpoints and metrics.
            """)
    var distributed: Distribution.Mode?

    @Option(
        help:
            ArgumentHelp(
                "Write a Chrome trace-event file of every stage of every batch (open in Perfetto or "
                    + "chrome://tracing) and print how much of the time blocks overlapped.")
    )
    var trace: String?

    mutating func validate() throws {
        guard epochs >= 1 else {
            throw ValidationError("--epochs must be at least 1, got \(epochs)")
        }
        if let batchSize, batchSize < 2 {
            throw ValidationError(
                "--batch-size must be at least 2, got \(batchSize): the local loss compares the "
                    + "rows of a batch, and with one row it is zero, so nothing would learn")
        }
        if let lr, !(lr.isFinite && lr > 0) {
            throw ValidationError("--lr must be a positive number, got \(lr)")
        }
        if let weightDecay, !(weightDecay.isFinite && weightDecay >= 0) {
            throw ValidationError("--weight-decay must be >= 0, got \(weightDecay)")
        }
        if let momentum, !(momentum.isFinite && momentum >= 0) {
            throw ValidationError("--momentum must be >= 0, got \(momentum)")
        }
        if let lrCosineTo, !(lrCosineTo.isFinite && lrCosineTo >= 0) {
            throw ValidationError("--lr-cosine-to must be >= 0, got \(lrCosineTo)")
        }
        if lrCosineTo != nil, lrMilestones != nil {
            throw ValidationError(
                "--lr-cosine-to and --lr-milestones are two schedules: choose one")
        }
        if let lrGamma, !(lrGamma.isFinite && lrGamma > 0) {
            throw ValidationError("--lr-gamma must be a positive number, got \(lrGamma)")
        }
        if readoutBlock < 1 {
            throw ValidationError("--readout-block must be at least 1, got \(readoutBlock)")
        }
        // Parsed again in `resolve`; checked here so that every usage error exits alike.
        do {
            _ = try loss.map(LossChoice.init(parsing:))
            _ = try lrMilestones.map(parseMilestones)
            _ = try denseNorm.map {
                try parseNorm($0, flag: "--dense-norm", allowed: [.layer, .batch, .none])
            }
            _ = try convNorm.map {
                try parseNorm($0, flag: "--conv-norm", allowed: [.instance, .batch, .none])
            }
        } catch let error as SigPropError {
            throw ValidationError("\(error)")
        }
        if let model {
            do { _ = try ModelArgument.description(model) } catch let error as SigPropError {
                throw ValidationError("\(error)")
            }
        }
        if let widthMultiplier, !(widthMultiplier.isFinite && widthMultiplier > 0) {
            throw ValidationError(
                "--width-multiplier must be a positive number, got \(widthMultiplier)")
        }
        if let optimizer, OptimizerKind(rawValue: optimizer) == nil {
            throw ValidationError(
                "--optimizer \(optimizer) is not an optimizer. Valid values: "
                    + "\(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        guard Readout(rawValue: readout) != nil else {
            throw ValidationError(
                "--readout \(readout) is not a readout. Valid values: "
                    + "\(Readout.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        if let limit, limit < 1 {
            throw ValidationError("--limit must be at least 1, got \(limit)")
        }
        if let cropPadding, cropPadding < 0 {
            throw ValidationError("--crop-padding must be >= 0, got \(cropPadding)")
        }
        if let hiddenLayers, hiddenLayers < 1 {
            throw ValidationError("--hidden-layers must be at least 1, got \(hiddenLayers)")
        }
        if let width, width < 1 {
            throw ValidationError("--width must be at least 1, got \(width)")
        }
        if let dropout, !(dropout >= 0 && dropout < 1) {
            throw ValidationError("--dropout must be in 0..<1, got \(dropout)")
        }
        guard schedule == "auto" || Schedule.Kind(rawValue: schedule) != nil else {
            throw ValidationError(
                "--schedule \(schedule) is not a schedule. Valid values: auto, "
                    + "\(Schedule.Kind.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        if let pipelineDepth, pipelineDepth < 1 {
            throw ValidationError("--pipeline-depth must be at least 1, got \(pipelineDepth)")
        }
        if readoutBlock != 1, readout != Readout.similarity.rawValue {
            throw ValidationError(
                "--readout-block chooses the block of --readout similarity, and --readout "
                    + "\(readout) does not read one (adaptive weighs every block's similarity "
                    + "itself): add --readout similarity, or drop --readout-block")
        }
        if pipelineDepth != nil, schedule == Schedule.Kind.sequential.rawValue {
            throw ValidationError(
                "--pipeline-depth sets the batches the pipelined schedule keeps in flight, and "
                    + "--schedule sequential keeps one: drop it, or choose --schedule pipelined")
        }
        if let earlyStop, earlyStop < 1 {
            throw ValidationError("--early-stop must be at least 1 epoch, got \(earlyStop)")
        }
        if let rule, LearningRule.Name(rawValue: rule) == nil {
            throw ValidationError(
                "--rule \(rule) is not a learning rule. Valid values: "
                    + LearningRule.Name.allCases.map(\.rawValue).joined(separator: ", "))
        }
        for (flag, value) in [
            ("--ff-threshold", ffThreshold), ("--ff-classifier-lr", ffClassifierLr),
        ] {
            if let value, !(value.isFinite && value > 0) {
                throw ValidationError("\(flag) must be a positive number, got \(value)")
            }
        }
        if let ffPeerWeight, !(ffPeerWeight.isFinite && ffPeerWeight >= 0) {
            throw ValidationError("--ff-peer-weight must be >= 0, got \(ffPeerWeight)")
        }
        if let ffNegatives,
            ForwardForwardSettings.NegativeLabels(rawValue: ffNegatives) == nil
        {
            throw ValidationError(
                "--ff-negatives \(ffNegatives) is not a choice of negatives. Valid values: "
                    + ForwardForwardSettings.NegativeLabels.allCases.map(\.rawValue).joined(
                        separator: ", "))
        }
        if let efpFirstPass, LearningRule.ErrorFirstPass(rawValue: efpFirstPass) == nil {
            throw ValidationError(
                "--efp-first-pass \(efpFirstPass) is not a first pass. Valid values: "
                    + LearningRule.ErrorFirstPass.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if efpFirstPass != nil, rule != LearningRule.Name.efp.rawValue, resume == nil {
            throw ValidationError("--efp-first-pass sets Error Forward-Propagation; add --rule efp")
        }
        if let rule, rule != LearningRule.Name.sigprop.rawValue,
            rule != LearningRule.Name.efp.rawValue, readout == Readout.similarity.rawValue
        {
            throw ValidationError(
                "--readout similarity is Signal Propagation's; --rule \(rule) offers output"
                    + (rule == LearningRule.Name.ff.rawValue ? ", goodness" : "")
                    + " and adaptive")
        }
        if rule == LearningRule.Name.pepita.rawValue, readout == Readout.goodness.rawValue {
            throw ValidationError(
                "--readout goodness is Forward-Forward's; --rule pepita offers output and adaptive")
        }
        if let pepitaFeedbackScale, !(pepitaFeedbackScale.isFinite && pepitaFeedbackScale >= 0) {
            throw ValidationError(
                "--pepita-feedback-scale must be >= 0, got \(pepitaFeedbackScale)")
        }
        if pepitaFeedbackScale != nil, rule != LearningRule.Name.pepita.rawValue, resume == nil {
            throw ValidationError("--pepita-feedback-scale sets PEPITA; add --rule pepita")
        }
        for case (let flag, let value?) in mirrorOptions where !(value.isFinite && value >= 0) {
            throw ValidationError("\(flag) must be >= 0, got \(value)")
        }
        if mirrorOptions.contains(where: { $0.value != nil }), !pepitaMirror, resume == nil {
            throw ValidationError(
                "--pepita-mirror-rate, --pepita-mirror-decay, --pepita-premirror and "
                    + "--pepita-mirror-every set weight mirroring; add --pepita-mirror")
        }
        if let pepitaMirrorEvery, pepitaMirrorEvery < 1 {
            throw ValidationError(
                "--pepita-mirror-every must be at least 1 (every epoch), got \(pepitaMirrorEvery)")
        }
        if pepitaMirror, rule != LearningRule.Name.pepita.rawValue, resume == nil {
            throw ValidationError("--pepita-mirror sets PEPITA; add --rule pepita")
        }
        if let pepitaPremirror, pepitaPremirror >= epochs {
            throw ValidationError(
                "--pepita-premirror \(pepitaPremirror) leaves no epoch of --epochs \(epochs) in "
                    + "which the weights learn; give fewer pre-mirroring epochs")
        }
        if rule == nil || rule == LearningRule.Name.sigprop.rawValue
            || rule == LearningRule.Name.efp.rawValue, resume == nil,
            readout == Readout.goodness.rawValue
        {
            throw ValidationError(
                "--readout goodness is Forward-Forward's: add --rule ff, or choose output, "
                    + "similarity or adaptive")
        }
        if let rule, let name = LearningRule.Name(rawValue: rule),
            !LearningRule(name).hasSignalPropagationBlocks, resume == nil
        {
            let given = [
                ("--loss", loss != nil), ("--fixed-context", fixedContext),
                ("--dense-norm", denseNorm != nil), ("--conv-norm", convNorm != nil),
                ("--[no-]k-row-shortcut", kRowShortcut != nil),
            ].filter(\.1).map(\.0)
            if !given.isEmpty {
                throw ValidationError(
                    "\(given.joined(separator: ", ")) set Signal Propagation's blocks (their "
                        + "local loss, context, norms); --rule \(rule)'s "
                        + "layers have none of them: drop \(given.count == 1 ? "it" : "them")")
            }
        }
        if rule == LearningRule.Name.efp.rawValue, kRowShortcut == true, resume == nil,
            efpFirstPass != LearningRule.ErrorFirstPass.learn.rawValue
        {
            throw ValidationError(
                "--k-row-shortcut cannot hold under --rule efp with the predict first pass: each "
                    + "sample's target is its own error, so the target stream runs on every row; "
                    + "drop it, or add --efp-first-pass learn (whose first pass takes it)")
        }
        let ffFlags =
            [ffThreshold, ffPeerWeight, ffClassifierLr].contains { $0 != nil } || ffNegatives != nil
        if ffFlags, rule != LearningRule.Name.ff.rawValue, resume == nil {
            throw ValidationError(
                "--ff-threshold, --ff-peer-weight, --ff-classifier-lr and --ff-negatives set "
                    + "Forward-Forward; add --rule ff")
        }
    }

    /// The options that set PEPITA's weight mirroring besides `--pepita-mirror`, by flag.
    var mirrorOptions: [(flag: String, value: Float?)] {
        [
            ("--pepita-mirror-rate", pepitaMirrorRate),
            ("--pepita-mirror-decay", pepitaMirrorDecay),
            ("--pepita-premirror", pepitaPremirror.map(Float.init)),
            ("--pepita-mirror-every", pepitaMirrorEvery.map(Float.init)),
        ]
    }

    /// The rule as flags give it, on top of `base` (the default, or a checkpoint's rule, where
    /// giving a different value is an error).
    func resolveRule(base: LearningRule, fromCheckpoint: Bool) throws -> LearningRule {
        var resolved = base
        var conflicts: [String] = []
        func apply<T: Equatable>(_ flag: String, _ given: T?, _ value: inout T) {
            guard let given else { return }
            if fromCheckpoint && given != value {
                conflicts.append("\(flag) \(given) (checkpoint: \(value))")
            }
            value = given
        }
        apply("--rule", rule.flatMap(LearningRule.Name.init(rawValue:)), &resolved.name)
        apply("--ff-threshold", ffThreshold, &resolved.forwardForward.thresholdPerUnit)
        apply("--ff-peer-weight", ffPeerWeight, &resolved.forwardForward.peerWeight)
        apply(
            "--ff-classifier-lr", ffClassifierLr,
            &resolved.forwardForward.classifierLearningRate)
        var negatives = resolved.forwardForward.negativesInForce
        apply(
            "--ff-negatives",
            ffNegatives.flatMap(ForwardForwardSettings.NegativeLabels.init(rawValue:)), &negatives)
        if ffNegatives != nil { resolved.forwardForward.negatives = negatives }
        // nil in a rule is the default value: giving that value on resume is no change.
        var feedbackScale = resolved.feedbackScaleInForce
        apply("--pepita-feedback-scale", pepitaFeedbackScale, &feedbackScale)
        if pepitaFeedbackScale != nil { resolved.feedbackScale = feedbackScale }
        if pepitaMirror || mirrorOptions.contains(where: { $0.value != nil }) {
            if fromCheckpoint, resolved.mirroring == nil {
                conflicts.append("--pepita-mirror (checkpoint: without weight mirroring)")
            }
            var mirroring = resolved.mirroring ?? FeedbackMirroring()
            apply("--pepita-mirror-rate", pepitaMirrorRate, &mirroring.rate)
            apply("--pepita-mirror-decay", pepitaMirrorDecay, &mirroring.decay)
            apply("--pepita-premirror", pepitaPremirror, &mirroring.preMirrorEpochs)
            apply("--pepita-mirror-every", pepitaMirrorEvery, &mirroring.period)
            resolved.mirroring = mirroring
        }
        var firstPass = resolved.errorFirstPassInForce
        apply(
            "--efp-first-pass", efpFirstPass.flatMap(LearningRule.ErrorFirstPass.init(rawValue:)),
            &firstPass)
        if efpFirstPass != nil { resolved.errorFirstPass = firstPass }
        if !conflicts.isEmpty { throw UsageError.conflicts(conflicts) }
        if resolved.name != .ff,
            ffThreshold != nil || ffPeerWeight != nil || ffClassifierLr != nil
                || ffNegatives != nil
        {
            throw UsageError("the --ff-* options set Forward-Forward, and this run is \(resolved)")
        }
        if resolved.name != .pepita, resolved.mirroring != nil {
            throw UsageError("--pepita-mirror sets PEPITA, and this run is \(resolved)")
        }
        if resolved.name != .efp, efpFirstPass != nil {
            throw UsageError(
                "--efp-first-pass sets Error Forward-Propagation, and this run is \(resolved)")
        }
        return resolved
    }

    /// A fresh run's model and options before flags: the defaults, changed to the rule's own
    /// where it has them (Forward-Forward's paper settings).
    static func defaults(for rule: LearningRule) -> (NetworkDescription, TrainingOptions) {
        var options = TrainingOptions()
        if rule.name == .pepita {
            options.optimizer = LearningRule.pepitaOptimizer
            options.batchSize = 64
            var description = NetworkDescription(layers: [.dense(1024), .dropout(0.1)])
            description.denseNorm = .none
            description.activation = .relu
            return (description, options)
        }
        guard rule.name == .ff else { return (.mlp(), options) }
        options.optimizer = ForwardForwardSettings.layerOptimizer
        options.batchSize = 100
        var description = NetworkDescription(layers: [.dense(1000), .dense(1000), .dense(1000)])
        description.denseNorm = .none
        description.activation = .relu
        return (description, options)
    }

    func run() throws {
        // Before anything else: the process may start over with faster OpenBLAS kernels.
        OpenBLASKernels.restartWithFasterKernelsIfNeeded()
        let group: MPIProcessGroup?
        do {
            group = try distributed.map { _ in try MPIProcessGroup() }
        } catch let error as SigPropError {
            printError("--distributed: \(error)")
            throw ExitCode.failure
        }
        guard let group, let distributed else { return try runAndReport { try train() } }
        // Rank 0 speaks for the run; an error on any rank stops every rank (MPI_Abort, which
        // mpirun reports with the rank), and the checkpoint on disk stays the last whole one.
        Output.isQuiet = group.rank != 0
        Output.rankPrefix = group.size > 1 ? "rank \(group.rank): " : ""
        do {
            try runAndReport { try train(distribution: Distribution(distributed, group: group)) }
        } catch {
            if group.size > 1 { group.abort(code: (error as? ExitCode)?.rawValue ?? 1) }
            group.finalize()
            throw error
        }
        group.finalize()
    }

    /// Runs `body`, printing its error as the user's mistake or the run's failure.
    func runAndReport(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as UsageError {
            printError(error.message)
            throw ExitCode.validationFailure
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

    /// The model and options as flags give them, on top of `base` (defaults, or a
    /// checkpoint's values). With a checkpoint, a flag that changes a value is an error.
    func resolve(base: (NetworkDescription, TrainingOptions), fromCheckpoint: Bool) throws -> (
        NetworkDescription, TrainingOptions
    ) {
        var (description, options) = base
        var conflicts: [String] = []
        func apply<T: Equatable>(
            _ flag: String, _ given: T?, _ value: inout T, shown: (T) -> String = { "\($0)" }
        ) {
            guard let given else { return }
            if fromCheckpoint && given != value {
                conflicts.append("\(flag) \(shown(given)) (checkpoint: \(shown(value)))")
            }
            value = given
        }
        if !fromCheckpoint, let model { description = try ModelArgument.description(model) }
        apply(
            "--model/--hidden-layers/--width/--dropout", try layers(base: description),
            &description.layers, shown: { $0.map(\.description).joined(separator: ",") })
        apply("--width-multiplier", widthMultiplier, &description.widthMultiplier)
        apply(
            "--dense-norm",
            try denseNorm.map {
                try parseNorm($0, flag: "--dense-norm", allowed: [.layer, .batch, .none])
            }, &description.denseNorm, shown: \.rawValue)
        apply(
            "--conv-norm",
            try convNorm.map {
                try parseNorm($0, flag: "--conv-norm", allowed: [.instance, .batch, .none])
            }, &description.convNorm, shown: \.rawValue)
        apply("--fixed-context", fixedContext ? true : nil, &description.fixedContext)
        apply("--[no-]ceil-pools", ceilPools, &description.ceilPools)
        apply("--timesteps", timesteps, &description.spiking.timesteps)
        apply(
            "--spike-encoding", try choice("--spike-encoding", spikeEncoding),
            &description.spiking.encoding, shown: \.rawValue)
        apply(
            "--spike-learning", try choice("--spike-learning", spikeLearning),
            &description.spiking.learning, shown: \.rawValue)
        apply(
            "--spike-loss", try choice("--spike-loss", spikeLoss),
            &description.spiking.lossTiming, shown: \.rawValue)
        apply(
            "--surrogate", try choice("--surrogate", surrogate), &description.spiking.surrogate,
            shown: \.rawValue)
        apply(
            "--surrogate-slope", surrogateSlope.map { Optional($0) }, &description.spiking.slope,
            shown: { $0.map { "\($0)" } ?? "default" })
        apply("--beta", beta, &description.spiking.neuron.beta)
        apply("--spike-threshold", spikeThreshold, &description.spiking.neuron.threshold)
        apply(
            "--reset", try choice("--reset", reset), &description.spiking.neuron.reset,
            shown: \.rawValue)
        apply("--learn-beta", learnBeta ? true : nil, &description.spiking.learnBeta)
        apply(
            "--learn-threshold", learnThreshold ? true : nil, &description.spiking.learnThreshold)
        apply(
            "--time-chunk", timeChunk.map { Optional($0) }, &description.spiking.timeChunk,
            shown: { $0.map { "\($0)" } ?? "none" })
        if givesSpikingFlags, !description.isSpiking {
            throw UsageError(
                "--timesteps, --spike-encoding, --spike-learning, --spike-loss, --surrogate, "
                    + "--surrogate-slope, --beta, --spike-threshold, --reset, --learn-beta, "
                    + "--learn-threshold and --time-chunk set spiking layers, and the model "
                    + "\(description.summary) has none: use --model snn-mlp, snn-cnn or lif<N> "
                    + "layers")
        }
        apply("--[no-]k-row-shortcut", kRowShortcut, &options.kRowShortcut)
        apply("--batch-size", batchSize, &options.batchSize)
        apply("--lr", lr, &options.optimizer.learningRate)
        apply(
            "--optimizer", optimizer.flatMap(OptimizerKind.init(rawValue:)),
            &options.optimizer.kind, shown: \.rawValue)
        apply("--momentum", momentum, &options.optimizer.momentum)
        apply("--weight-decay", weightDecay, &options.optimizer.weightDecay)
        apply("--lr-gamma", lrGamma, &options.optimizer.gamma)
        apply("--lr-cosine-to", lrCosineTo.map { Optional($0) }, &options.optimizer.cosineFloor)
        apply(
            "--lr-milestones", try lrMilestones.map(parseMilestones), &options.optimizer.milestones)
        apply("--loss", try loss.map(LossChoice.init(parsing:)), &options.loss, shown: \.name)
        apply("--seed", seed, &options.seed)
        apply("--crop-padding", cropPadding, &options.augmentation.cropPadding)
        apply("--flip", flip ? true : nil, &options.augmentation.horizontalFlip)
        apply(
            "--validation", try validation.map(ValidationSize.parse), &options.validation,
            shown: { $0?.description ?? "0" })
        if !conflicts.isEmpty { throw UsageError.conflicts(conflicts) }
        if lrGamma != nil, options.optimizer.milestones.isEmpty {
            throw UsageError(
                "--lr-gamma multiplies the rate at --lr-milestones, and this run has none: add "
                    + "--lr-milestones, or drop --lr-gamma")
        }
        if surrogate != nil || surrogateSlope != nil, description.isSpiking,
            description.spiking.learning != .surrogate
        {
            throw UsageError(
                "--surrogate and --surrogate-slope shape the surrogate that "
                    + "--spike-learning surrogate learns from, and this run learns from the "
                    + "\(description.spiking.learning.rawValue): add --spike-learning surrogate, "
                    + "or drop them")
        }
        if momentum != nil, options.optimizer.kind != .sgd {
            throw UsageError(
                "--momentum is SGD's, and this run's optimizer is "
                    + "\(options.optimizer.kind.rawValue): add --optimizer sgd, or drop --momentum")
        }
        // Another schedule given replaces the rule's default one.
        if !fromCheckpoint, lrCosineTo != nil || lrMilestones != nil {
            options.optimizer.linearCooldown = nil
        }
        options.epochs = epochs
        options.readout = Readout(rawValue: readout)!
        options.readoutBlock = readoutBlock
        return (description, options)
    }

    /// "1 learning block", "3 learning blocks".
    static func learningBlocks(_ count: Int) -> String {
        "\(count) learning block" + (count == 1 ? "" : "s")
    }

    /// `text` as a value of `T`, or a usage error listing the values.
    func choice<T: RawRepresentable & CaseIterable>(_ flag: String, _ text: String?) throws -> T?
    where T.RawValue == String {
        guard let text else { return nil }
        guard let value = T(rawValue: text) else {
            throw UsageError(
                "\(flag) \(text) is not one of "
                    + T.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return value
    }

    /// Whether any flag of the spiking layers is given.
    var givesSpikingFlags: Bool {
        timesteps != nil || spikeEncoding != nil || spikeLearning != nil || spikeLoss != nil
            || surrogate != nil || surrogateSlope != nil
            || beta != nil || spikeThreshold != nil || reset != nil || learnBeta
            || learnThreshold || timeChunk != nil
    }

    /// The layers that --model, --hidden-layers, --width and --dropout give (nil: none of them
    /// is given). Without --model they shape `base`'s layers (a resumed run's) or the mlp.
    func layers(base: NetworkDescription) throws -> [NetworkDescription.Layer]? {
        guard model != nil || hiddenLayers != nil || width != nil || dropout != nil else {
            return nil
        }
        var description = try model.map(ModelArgument.description) ?? base
        if model == nil {
            description.layers.removeAll { if case .dropout = $0 { true } else { false } }
        }
        if description.preset == "mlp" {
            let dense = description.layers.compactMap { layer -> Int? in
                if case .dense(let width) = layer { width } else { nil }
            }
            description.layers =
                NetworkDescription.mlp(
                    hiddenLayers: hiddenLayers ?? dense.count, width: width ?? dense.first ?? 1024
                ).layers
        } else if hiddenLayers != nil || width != nil {
            throw UsageError(
                "--hidden-layers and --width shape the mlp preset; for --model "
                    + "\(description.summary) write the layers (--model dense512,dense512) or "
                    + "scale them with --width-multiplier")
        }
        return description.withDropout(dropout ?? 0).layers
    }

    func parseNorm(_ text: String, flag: String, allowed: [NormKind]) throws -> NormKind {
        guard let norm = NormKind(rawValue: text), allowed.contains(norm) else {
            throw SigPropError.configuration(
                "\(flag) \(text) is not allowed. Valid values: "
                    + "\(allowed.map(\.rawValue).joined(separator: ", "))"
            )
        }
        return norm
    }

    func parseMilestones(_ text: String) throws -> [Int] {
        try text.split(separator: ",").map { item in
            guard let epoch = Int(item.trimmingCharacters(in: .whitespaces)), epoch >= 1 else {
                throw SigPropError.configuration(
                    "--lr-milestones \(text): each milestone must be an epoch number >= 1")
            }
            return epoch
        }
    }

    /// The data settings as flags give them, on top of a checkpoint's (where giving a
    /// different value is an error): the folder and the training samples used.
    func resolveData(stored: DataSettings?) throws -> (directory: String, limit: Int?) {
        guard let stored else { return (dataDir ?? Dataset.defaultDirectory, limit) }
        var conflicts: [String] = []
        if let dataDir,
            URL(fileURLWithPath: dataDir).standardizedFileURL.path != stored.directory
        {
            conflicts.append("--data-dir \(dataDir) (checkpoint: \(stored.directory))")
        }
        if let limit, limit != stored.limit {
            conflicts.append(
                "--limit \(limit) (checkpoint: "
                    + "\(stored.limit.map(String.init) ?? "none, every sample"))")
        }
        if !conflicts.isEmpty { throw UsageError.conflicts(conflicts) }
        return (stored.directory, stored.limit)
    }

    /// Every file the run writes can be written, and no other run's checkpoint is replaced
    /// unasked: checked before any work, so a bad path costs a second, not an epoch. A resumed
    /// run replaces the checkpoints of its own folder only.
    func checkOutputs() throws {
        func folder(_ path: String) -> String {
            URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path
        }
        let ownFolder = resume.map {
            folder(URL(fileURLWithPath: $0).deletingLastPathComponent().path)
        }
        if !overwrite, ownFolder != folder(checkpointDir),
            let existing = OutputFiles.existingCheckpoints(in: checkpointDir).first
        {
            let run = resume == nil ? "a new run" : "this run, resumed from another folder,"
            throw UsageError(
                "--checkpoint-dir \(checkpointDir) already holds a checkpoint, \(existing), "
                    + "which \(run) would replace. Continue that run with --resume "
                    + "\(existing), give another --checkpoint-dir, or pass --overwrite to "
                    + "replace it")
        }
        try OutputFiles.prepareFolder(checkpointDir, flag: "--checkpoint-dir")
        if let metrics { try OutputFiles.checkAppendable(metrics, flag: "--metrics") }
        if let trace { try OutputFiles.checkReplaceable(trace, flag: "--trace") }
    }

    /// Settings that only the data shows cannot work: refused before the network is built.
    func checkFits(_ options: TrainingOptions, _ data: Dataset) throws {
        if case .topK(let k) = options.loss, k >= data.classes {
            throw UsageError(
                "--loss top-k:\(k): K must be below the number of classes, \(data.classes) "
                    + "here (the loss compares each sample's class with K others)")
        }
        let padding = options.augmentation.cropPadding
        if padding >= min(data.height, data.width) {
            throw UsageError(
                "--crop-padding \(padding) must be smaller than the images, which are "
                    + "\(data.height)x\(data.width): a larger padding crops empty images")
        }
    }

    func train(distribution: Distribution? = nil) throws {
        // First thing, so a stop during start-up also ends in a clean stop. Ranks stop together
        // only by ending: mpirun's Ctrl-C ends every rank, and the run resumes from the last
        // epoch's checkpoint.
        let stop = distribution == nil ? StopSignal.install() : nil
        let isRoot = distribution?.isRoot ?? true
        let selection = try BackendSelection(environment: ProcessInfo.processInfo.environment)
        let checkpoint = try resume.map { try Checkpoint(contentsOf: URL(fileURLWithPath: $0)) }
        let storedModel = try checkpoint?.model
        let learningRule = try resolveRule(
            base: try checkpoint?.rule ?? .signalPropagation, fromCheckpoint: checkpoint != nil)
        let fresh = Self.defaults(for: learningRule)
        var (description, options) = try resolve(
            base: (
                storedModel?.description ?? fresh.0, try checkpoint?.options ?? fresh.1
            ),
            fromCheckpoint: checkpoint != nil)
        // A resumed run holds out the samples its checkpoint's run held out, even where `auto`
        // has come to mean another number since.
        if case .automatic? = options.validation, let held = checkpoint?.recordedValidationCount {
            options.validation = held > 0 ? .count(held) : nil
        }
        let stored = try checkpoint?.data
        let (dataDirectory, dataLimit) = try resolveData(stored: stored)
        let epochsDone = try checkpoint?.epochs ?? 0
        if epochsDone >= options.epochs, !describe {
            throw UsageError(
                "--resume: the checkpoint has already trained \(epochsDone) epochs; pass "
                    + "--epochs N with N > \(epochsDone) to train more")
        }
        if !describe, isRoot { try checkOutputs() }

        let directory = URL(fileURLWithPath: dataDirectory)
        let loadStart = Date()
        var trainSet = try Dataset.load(directory: directory, split: .train)
        var testSet = try Dataset.load(directory: directory, split: .test)
        // Forward-Forward reads pixels as they are (0...1): the label it writes into the
        // input is on that scale. PEPITA's settings are its authors', on pixels in 0...1.
        // Error Forward-Propagation trains Signal Propagation's network, on its input.
        // Spiking networks take the image as their current, as snnTorch's tutorials do.
        let (normalization, normalizationSource) =
            stored.map { ($0.normalization, "from the checkpoint") }
            ?? (learningRule.name == .ff || learningRule.name == .pepita || description.isSpiking
                ? (
                    Normalization(
                        mean: [Float](repeating: 0, count: trainSet.channels),
                        std: [Float](repeating: 1, count: trainSet.channels)),
                    "none: "
                        + (description.isSpiking
                            ? "spiking networks read" : "\(learningRule) reads")
                        + " pixels in 0...1"
                ) : Normalization.standard(for: trainSet))
        trainSet = try normalization.apply(to: trainSet)
        testSet = try normalization.apply(to: testSet)
        if let dataLimit { trainSet = trainSet.prefix(dataLimit) }
        try checkFits(options, trainSet)
        // The input and the classes come from the data (a resumed run's from its checkpoint,
        // which the trainer checks against the data).
        let plan: NetworkPlan
        do {
            plan = try NetworkPlan(
                description,
                inputShape: storedModel?.inputShape
                    ?? [trainSet.channels, trainSet.height, trainSet.width],
                classes: storedModel?.classes ?? trainSet.classes)
            try Network.check(plan, for: learningRule.name)
        } catch let error as SigPropError {
            throw UsageError("--model \(description.summary): \(error)")
        }
        for pool in plan.poolsDroppingEdges {
            printError(
                "warning: \(pool) drops the edge its window does not divide, which the block "
                    + "before it learns from; --ceil-pools pools it")
        }
        let dataSettings = DataSettings(
            directory: dataDirectory, limit: dataLimit, normalization: normalization)

        let (devices, warnings) = try selection.makeDevices()
        for warning in warnings { printError("warning: \(warning)") }
        if devices.count == 1 {
            emit("backend: \(devices[0].description)")
        } else {
            emit(
                "backend: \(devices.count) devices\n"
                    + devices.enumerated().map {
                        "  device \($0.offset): \($0.element.description)"
                    }.joined(separator: "\n"))
        }
        emit(
            String(
                format:
                    "data: %@ (%@ training, %@ test images of %dx%dx%d, %d classes; loaded in "
                    + "%.1f s)",
                dataDirectory, ProgressText.grouped(trainSet.count),
                ProgressText.grouped(testSet.count), trainSet.channels, trainSet.height,
                trainSet.width, trainSet.classes, Date().timeIntervalSince(loadStart)))
        emit("normalisation: \(normalization.summary) (\(normalizationSource))")

        // In a pipeline over ranks, this rank's stages spread over its devices.
        let stageDevices =
            try distribution.flatMap { distribution in
                guard distribution.mode == .pipeline else { return nil }
                return try plan.stageDevices(
                    on: devices, rank: distribution.rank, ranks: distribution.ranks)
            } ?? plan.stageDevices(on: devices)
        let automatic = Schedule.automatic(
            for: plan, rule: learningRule, capabilities: stageDevices.map(\.capabilities),
            batchSize: options.batchSize,
            targetRows: plan.targetRows(
                batchSize: options.batchSize,
                kRowShortcut: options.kRowShortcut && learningRule.allowsKRowShortcut))
        // Replicas overlap each block's gradient sum with the later blocks' compute only
        // where the blocks have streams of their own.
        let (automaticKind, automaticReason) =
            distribution?.mode == .data
            ? (
                Schedule.Kind.pipelined,
                "data parallelism sums each block's gradients while the later blocks compute"
            ) : (automatic.schedule.kind, automatic.reason)
        let scheduleKind = Schedule.Kind(rawValue: schedule) ?? automaticKind
        if pipelineDepth != nil, scheduleKind == .sequential {
            emit(
                "note: --pipeline-depth applies to the pipelined schedule, and auto chose the "
                    + "sequential one here (--schedule pipelined keeps the depth)")
        }
        if describe {
            printDescription(
                plan, devices: devices, options: options, schedule: scheduleKind,
                rule: learningRule)
            return
        }
        let network = try Network(
            description, inputShape: plan.inputShape, classes: plan.classes, devices: devices,
            stageDevices: stageDevices, optimizer: options.optimizer, seed: options.seed,
            rule: learningRule)
        if devices.count > 1 {
            // Over ranks, the stages this rank runs (it holds the others on its first device).
            let layerRanks = try distribution.flatMap { distribution in
                distribution.mode == .pipeline ? try plan.stageRanks(distribution.ranks) : nil
            }
            let runs = { (stage: Int) in
                layerRanks.map { $0[network.stageLayer(stage)] == distribution?.rank } ?? true
            }
            let groups = devices.enumerated().map { index, device in
                "device \(index): "
                    + (0..<network.stageCount).filter {
                        runs($0) && network.stageDevice($0) === device
                    }.map(network.stageName).joined(separator: ", ")
            }
            emit("placement (balanced by multiply-adds): " + groups.joined(separator: "; "))
        }
        if let distribution {
            try checkDistributable(network, distribution: distribution)
            emit(Self.rankPlacement(network, distribution: distribution))
        }
        let trainer = try Trainer(
            network: network, options: options, train: trainSet, test: testSet,
            schedule: Schedule(scheduleKind, depth: pipelineDepth), distribution: distribution)
        if let checkpoint, let resume {
            let batches = try checkpoint.batchesDone
            guard batches < trainer.batchesPerEpoch else {
                throw SigPropError.configuration(
                    "--resume \(resume): the checkpoint is damaged: it has \(batches) batches "
                        + "of epoch \(epochsDone + 1) done, but an epoch has "
                        + "\(trainer.batchesPerEpoch). Resume from another checkpoint, or "
                        + "start a new run without --resume")
            }
            try checkpoint.restore(into: network)
            emit(
                "resumed: \(resume) after epoch \(epochsDone)"
                    + (batches > 0 ? " and \(batches) batches of epoch \(epochsDone + 1)" : ""))
        }
        try checkpoint?.checkSameSplit(trainer.split)
        if let held = trainer.validation {
            emit(
                "validation: \(held.count) of the \(trainSet.count) training images held out "
                    + "(--validation \(options.validation?.description ?? "0")); readouts, "
                    + "best.safetensors and --early-stop are chosen on them")
        } else if earlyStop != nil {
            throw UsageError(
                "--early-stop needs a validation split, and this run has none: pass "
                    + "--validation N (a count or a fraction of the training set)")
        } else if options.readout == .adaptive {
            emit(
                "validation: none (--validation \(options.validation?.description ?? "0") with "
                    + "\(trainSet.count) training images), so the adaptive readout uses the output "
                    + "layer; pass --validation N to choose among the readouts")
        }
        let traceURL = trace.map { URL(fileURLWithPath: $0) }
        if traceURL != nil {
            trainer.pipeline.trace = Trace(
                rowNames: (0..<network.stageCount).map(network.stageName))
        }
        let parameters = network.parameters.reduce(0) { $0 + $1.value.count }
        let fused =
            devices.allSatisfy(\.fusesWeightUpdates)
            ? " (fused into the weight products)"
            : devices.contains(where: \.fusesWeightUpdates) ? " (fused on some devices)" : ""
        emit(
            "rule: \(learningRule)"
                + (learningRule.name == .ff
                    ? " (threshold \(learningRule.forwardForward.thresholdPerUnit) x width, peer "
                        + "normalisation \(learningRule.forwardForward.peerWeight), classifier lr "
                        + "\(learningRule.forwardForward.classifierLearningRate), "
                        + "\(learningRule.forwardForward.negativesInForce.rawValue) negatives)"
                    : learningRule.name == .pepita
                        ? " (feedback scale \(learningRule.feedbackScaleInForce)"
                            + (learningRule.mirroring.map {
                                ", weight mirroring: rate \($0.rate), decay \($0.decay), noise "
                                    + "\($0.noise), \($0.preMirrorEpochs) pre-mirroring epochs"
                                    + ($0.period == 1 ? "" : ", then every \($0.period) epochs")
                            } ?? "") + ")"
                        : learningRule.name == .efp
                            ? " (first pass: \(learningRule.errorFirstPassInForce.rawValue))"
                            : ""))
        emit(
            "model: \(description.summary), \(Self.learningBlocks(network.blockCount)) + output layer, "
                + "\(ProgressText.grouped(parameters)) parameters; \(trainer.batchesPerEpoch) "
                + "batches of \(options.batchSize) per epoch; "
                + (learningRule.hasSignalPropagationBlocks ? "loss \(options.loss.name), " : "")
                + "\(options.optimizer.kind.rawValue) "
                + options.optimizer.scheduleSummary(epochs: options.epochs)
                + "\(fused); "
                + "schedule \(trainer.schedule.kind.rawValue)"
                + (trainer.schedule.kind == .pipelined
                    ? " (\(trainer.pipeline.depth) batches in flight)" : "")
                + (schedule == "auto" ? "; auto: \(automaticReason)" : ""))
        if description.isSpiking { emit("spiking: \(description.spiking)") }

        let checkpointURL = URL(fileURLWithPath: checkpointDir).appendingPathComponent(
            "last.safetensors")
        let bestURL = URL(fileURLWithPath: checkpointDir).appendingPathComponent(
            "best.safetensors")
        var best = try checkpoint?.bestEpoch
        /// What a checkpoint holds besides the network: the split and the best epoch so far.
        func saving(_ checkpoint: Checkpoint) -> Checkpoint {
            var checkpoint = checkpoint
            checkpoint.record(trainer.split)
            checkpoint.record(best)
            return checkpoint
        }
        let terminal = isatty(STDOUT_FILENO) != 0 && !Output.isQuiet
        var startBatch = try checkpoint?.batchesDone ?? 0
        for epoch in epochsDone..<options.epochs {
            var lastPlainReport = Date()
            let outcome = try trainer.runEpoch(
                epoch, startBatch: startBatch, shouldStop: { stop?.isSet ?? false },
                progress: { progress in
                    let line = ProgressText.progress(
                        progress, epochs: options.epochs, width: Terminal.columns())
                    if terminal {
                        print("\r\u{1B}[K" + line, terminator: "")
                        // All streams: stdout is not concurrency-safe to name in Swift 6.
                        fflush(nil)
                    } else if Date().timeIntervalSince(lastPlainReport) > 10 {
                        lastPlainReport = Date()
                        emit(line)
                    }
                })
            startBatch = 0
            if terminal { print("\r\u{1B}[K", terminator: "") }
            guard case .completed(let result) = outcome else {
                if case .interrupted(let batchesDone) = outcome, let stop {
                    try saving(
                        Checkpoint(
                            network: network, options: options, epochs: epoch,
                            batchesDone: batchesDone, data: dataSettings)
                    ).write(to: checkpointURL)
                    emit(
                        "\(stop.cause) after batch \(batchesDone) of epoch \(epoch + 1); "
                            + "checkpoint: \(checkpointURL.path). Continue with --resume "
                            + checkpointURL.path)
                }
                throw ExitCode(stop?.exitCode ?? 1)
            }
            report(result, options: options)
            let improved = result.validationAccuracy.map { BestEpoch.improves($0, on: best) }
            if improved == true, let accuracy = result.validationAccuracy {
                best = BestEpoch(epoch: epoch + 1, accuracy: accuracy)
            }
            // The checkpoints first: a failure to write the other files loses no training.
            let saved = saving(
                try Checkpoint(
                    network: network, options: options, epochs: epoch + 1, data: dataSettings))
            // best first: a crash between the writes leaves a last that does not yet count it.
            if isRoot {
                if improved == true { try saved.write(to: bestURL) }
                try saved.write(to: checkpointURL)
            }
            let written =
                "The checkpoint of epoch \(epoch + 1) is written: fix this, then continue with "
                + "--resume \(checkpointURL.path)"
            if let path = metrics, isRoot {
                do { try appendMetrics(result, to: path) } catch let error as FileSystemError {
                    throw OutputFiles.problem(
                        flag: "--metrics", path: path,
                        action: "write the metrics of epoch \(epoch + 1)", reason: error.reason,
                        fix: written)
                }
            }
            if let traceURL {
                // Every rank's spans, in one file that rank 0 writes.
                do {
                    if let data = try trainer.pipeline.traceOverRanks() {
                        try Trace.write(data, to: traceURL)
                    }
                } catch let error as SigPropError {
                    throw SigPropError.configuration("\(error). \(written)")
                }
            }
            if let earlyStop, let best, best.stops(after: epoch + 1, patience: earlyStop) {
                emit(
                    "early stop: no better validation accuracy in the \(earlyStop) epochs since "
                        + "epoch \(best.epoch)")
                break
            }
        }
        emit("checkpoint: \(checkpointURL.path)")
        if let best {
            emit(
                String(
                    format: "best: %@ (epoch %d, validation accuracy %.2f%%)", bestURL.path,
                    best.epoch, 100 * best.accuracy))
        }
        if let traceURL, let trace = trainer.pipeline.trace {
            emit(
                String(
                    format:
                        "trace: %@ (%d stage spans, %d kernels); two or more blocks were busy at "
                        + "once %.0f%% of the busy time",
                    traceURL.path, trace.spans.count, trace.kernels.count, 100 * trace.overlapShare)
                    + (trace.untimed > 0
                        ? " (\(trace.untimed) spans left out: the driver gave no timestamps for "
                            + "them)"
                        : ""))
        }
    }

    /// `--describe`: the blocks, and the memory training takes on each device.
    func printDescription(
        _ plan: NetworkPlan, devices: [Device], options: TrainingOptions,
        schedule: Schedule.Kind, rule: LearningRule
    ) {
        let stageDevices = plan.stageDevices(on: devices)
        let input = plan.inputShape.map(String.init).joined(separator: "x")
        emit(
            "model: \(plan.description.summary) on \(input) input, \(plan.classes) classes; "
                + "\(Self.learningBlocks(plan.blockCount)) + output layer; rule: \(rule)")
        if plan.isSpiking { emit("spiking: \(plan.description.spiking)") }
        for line in plan.table(
            stageDevices: devices.count > 1 ? stageDevices : nil, rule: rule.name)
        {
            emit("  " + line)
        }
        let inFlight = Schedule(schedule, depth: pipelineDepth).batchesInFlight(
            stages: plan.stages.count)
        let targetRows = plan.targetRows(
            batchSize: options.batchSize,
            kRowShortcut: options.kRowShortcut && rule.allowsKRowShortcut)
        emit(
            "memory (\(schedule.rawValue) schedule, \(inFlight) batch\(inFlight == 1 ? "" : "es") of "
                + "\(options.batchSize) "
                + "in flight, \(options.optimizer.kind.rawValue)):")
        for need in plan.memory(
            on: stageDevices, optimizer: options.optimizer, batchSize: options.batchSize,
            targetRows: targetRows, inFlight: inFlight)
        {
            let total = need.parameterBytes + need.activationBytes
            emit(
                "  \(need.devices): \(formatBytes(UInt64(total))) (parameters and optimizer "
                    + "state \(formatBytes(UInt64(need.parameterBytes))), activations at least "
                    + "\(formatBytes(UInt64(need.activationBytes)))) of "
                    + "\(formatBytes(need.freeBytes)) free")
        }
    }

    func report(_ result: EpochMetrics, options: TrainingOptions) {
        let width = Terminal.columns()
        emit(
            String(
                format:
                    "epoch %d/%d  %.1f s  %@ samples/s  train acc %.2f%%  test acc %.2f%% (%@)",
                result.epoch, options.epochs, result.seconds,
                ProgressText.grouped(Int(result.samplesPerSecond.rounded())),
                100 * result.trainAccuracy, 100 * result.testAccuracy, options.readout.rawValue))
        if let validation = result.validationAccuracy {
            emit(String(format: "  validation acc %.2f%%", 100 * validation))
        }
        let losses =
            result.blockLosses.map { String(format: "%.3f", $0) }
            + [String(format: "output %.3f", result.outputLoss)]
        for line in ProgressText.wrapped("  losses", losses, width: width) { emit(line) }
        let others = result.readoutAccuracies.filter { $0.key != options.readout.rawValue }
            .sorted { ProgressText.naturalOrder($0.key, $1.key) }
            .map { String(format: "%@ %.2f%%", $0.key, 100 * $0.value) }
        let lines = ProgressText.wrapped(
            "  other readouts:", others + ["adaptive uses \(result.adaptiveReadout)"],
            separator: ", ", width: width)
        for line in lines { emit(line) }
        let validated = result.validationAccuracies.filter {
            $0.key != Readout.similarity.rawValue && $0.key != Readout.adaptive.rawValue
        }.sorted { ProgressText.naturalOrder($0.key, $1.key) }
            .map { String(format: "%@ %.2f%%", $0.key, 100 * $0.value) }
        for line in ProgressText.wrapped("  validation:", validated, separator: ", ", width: width)
        where !validated.isEmpty {
            emit(line)
        }
        // Over several ranks: what each sent and how long it waited on the others.
        let ranks = zip(result.rankBytesPerBatch, result.rankSecondsWaiting).enumerated().map {
            String(
                format: "rank %d sent %@ per batch, waited %.1f s", $0,
                formatBytes(UInt64($1.0.rounded())), $1.1)
        }
        for line in ProgressText.wrapped("  ranks:", ranks, separator: "; ", width: width)
        where !ranks.isEmpty {
            emit(line)
        }
        if let angle = result.feedbackAngle {
            emit(
                String(
                    format: "  feedback: -F at %.1f° to (W_L ... W_1)ᵀ (90°: unaligned)", angle))
        }
        // Spiking networks: how often each block's units fire, and how many never did.
        let spikes = zip(result.spikeRates, result.deadFractions).enumerated().map {
            String(format: "block%d %.1f%% (%.1f%% dead)", $0 + 1, 100 * $1.0, 100 * $1.1)
        }
        guard !spikes.isEmpty else { return }
        for line in ProgressText.wrapped(
            "  spikes per step:", spikes, separator: ", ", width: width)
        {
            emit(line)
        }
    }

    /// One JSON line per epoch, appended.
    func appendMetrics(_ metrics: EpochMetrics, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(metrics)
        line.append(UInt8(ascii: "\n"))
        try OutputFiles.append(line, to: path)
    }
}

/// A command line that cannot work as given, found after the flags were parsed (it needs the
/// checkpoint, the data or the file system to tell). It exits with ArgumentParser's status for
/// usage errors, 64, like the errors `validate()` finds.
struct UsageError: Error {
    let message: String

    init(_ message: String) { self.message = message }

    /// Flags of a resumed run that differ from the checkpoint, which fixes them.
    static func conflicts(_ conflicts: [String]) -> UsageError {
        UsageError(
            "--resume: these flags differ from the checkpoint, which fixes them: "
                + conflicts.joined(separator: "; ")
                + ". Drop them to continue the run as it was, or start a new run without --resume")
    }
}

/// Where the run's lines go: one process, or rank 0 of several.
enum Output {
    /// Ranks other than 0 print errors only.
    nonisolated(unsafe) static var isQuiet = false
    /// Before each error of a run over several ranks: which rank met it.
    nonisolated(unsafe) static var rankPrefix = ""
}

/// Prints a line and flushes, so progress shows at once when stdout is a pipe or a file.
func emit(_ line: String) {
    guard !Output.isQuiet else { return }
    print(line)
    fflush(nil)
}

func printError(_ message: String) {
    let line = "error: \(Output.rankPrefix)\(message)\n"
    FileHandle.standardError.write(
        Data(
            line.replacingOccurrences(
                of: "error: \(Output.rankPrefix)warning: ", with: "warning: \(Output.rankPrefix)"
            ).utf8))
}
