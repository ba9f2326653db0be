/// How a network's blocks learn in a forward pass. Every rule trains blocks that each learn
/// from their own forward passes, with nothing flowing back between blocks; they differ in the
/// signal S that carries the target into the network (docs/learning-rules.md):
/// - Signal Propagation: the target's projection, a second stream through the same blocks,
///   each block pulling a sample's activations towards its own class's.
/// - Forward-Forward: the label written into the input; each layer tells the input with the
///   right label (positive) from the input with a wrong one (negative) by its goodness.
/// - PEPITA: the output error projected onto the input; each layer learns from how much its
///   activity changes when the input is modulated by the error.
/// - Error Forward-Propagation: the output error of a first pass, projected by the signal
///   block's context part, as the target stream of a second Signal Propagation pass.
public struct LearningRule: Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Name: String, Sendable, Codable, CaseIterable {
        /// Signal Propagation (Kohan et al. 2023), SigProp's first rule.
        case sigprop
        /// Forward-Forward, supervised (Hinton 2022, section 3.3).
        case ff
        /// PEPITA (Dellaferrera & Kreiman 2022): error-driven input modulation.
        case pepita
        /// Error Forward-Propagation (Kohan, Rietman & Siegelmann 2018): Signal Propagation's
        /// blocks learning from the output error of a first pass.
        case efp
    }

    /// What Error Forward-Propagation's first pass is, as the authors' library offers it.
    public enum ErrorFirstPass: String, Sendable, Codable, CaseIterable {
        /// The input stream only, no learning: the output it gives is what the error is taken
        /// of (the library's `LoopBack`).
        case predict
        /// A Signal Propagation pass with the target, whose blocks learn (the library's
        /// `ForwardLoopBack`); the error is taken of its output.
        case learn
    }

    public var name: Name
    /// Forward-Forward's settings (used when `name` is `.ff`).
    public var forwardForward: ForwardForwardSettings
    /// PEPITA's scale of the fixed feedback projection F: entries uniform in
    /// ±scale·sqrt(6 / inputs) (used when `name` is `.pepita`; nil: 0.05, the paper's).
    public var feedbackScale: Float?
    /// PEPITA's weight mirroring (used when `name` is `.pepita`; nil: F stays fixed).
    public var mirroring: FeedbackMirroring?
    /// Error Forward-Propagation's first pass (used when `name` is `.efp`; nil: `.predict`).
    public var errorFirstPass: ErrorFirstPass?

    public init(
        _ name: Name = .sigprop, forwardForward: ForwardForwardSettings = .init(),
        feedbackScale: Float? = nil, mirroring: FeedbackMirroring? = nil,
        errorFirstPass: ErrorFirstPass? = nil
    ) {
        self.name = name
        self.forwardForward = forwardForward
        self.feedbackScale = feedbackScale
        self.mirroring = mirroring
        self.errorFirstPass = errorFirstPass
    }

    /// The scale of PEPITA's feedback matrix in force: the given one, or the paper's 0.05.
    public var feedbackScaleInForce: Float { feedbackScale ?? 0.05 }

    /// Error Forward-Propagation's first pass in force: the given one, or `.predict`.
    public var errorFirstPassInForce: ErrorFirstPass { errorFirstPass ?? .predict }

    /// Whether every target stream may run on one row per class where the norms allow it: not
    /// under Error Forward-Propagation, whose second pass's target is each sample's own error.
    /// (Memory estimates count that pass's B rows.)
    public var allowsKRowShortcut: Bool { name != .efp }

    /// Whether the target stream of a Signal Propagation pass with the target onehot(c) may run
    /// on one row per class where the norms allow it: Signal Propagation's, and Error
    /// Forward-Propagation's first pass that learns (`ErrorFirstPass.learn`).
    public var allowsKRowShortcutInFirstPass: Bool {
        allowsKRowShortcut || errorFirstPassInForce == .learn
    }

    /// Whether the blocks are Signal Propagation's (a local loss, the signal's context
    /// projection, norms, the similarity readout): under Signal Propagation and Error
    /// Forward-Propagation. Forward-Forward's layers learn from their goodness and PEPITA's
    /// from the modulated pass, plain dense layers without norms.
    public var hasSignalPropagationBlocks: Bool { name == .sigprop || name == .efp }

    /// Whether a batch runs through the network twice, each layer's two passes on the layer's
    /// stream (PEPITA, Error Forward-Propagation).
    public var passes: Int { name == .pepita || name == .efp ? 2 : 1 }

    /// Whether each batch's negatives are the network's hardest wrong labels
    /// (`ForwardForwardSettings.NegativeLabels.hard`): chosen with the weights after every
    /// earlier batch, so a batch waits for the one before it to finish (no pipelining), and
    /// a resumed run chooses what an uninterrupted one would.
    public var choosesHardNegatives: Bool {
        name == .ff && forwardForward.negativesInForce == .hard
    }

    /// PEPITA's optimizer by default (the authors' notebook): SGD, momentum 0.9, rate 0.01,
    /// multiplied by 0.1 from epochs 61 and 91 (1-based).
    public static var pepitaOptimizer: OptimizerSettings {
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.learningRate = 0.01
        settings.momentum = 0.9
        settings.milestones = [60, 90]
        settings.gamma = 0.1
        return settings
    }

    public static let signalPropagation = LearningRule(.sigprop)

    public var description: String {
        switch name {
        case .sigprop: "Signal Propagation"
        case .ff: "Forward-Forward"
        case .pepita: "PEPITA"
        case .efp: "Error Forward-Propagation"
        }
    }
}

/// Forward-Forward's settings. The defaults are those of Hinton's paper as its common PyTorch
/// reimplementation sets them (docs/learning-rules.md).
public struct ForwardForwardSettings: Sendable, Codable, Equatable {
    /// A layer's goodness threshold, per unit of its width: the logistic loss is taken of
    /// sum h^2 - `thresholdPerUnit` x width.
    public var thresholdPerUnit: Float = 1
    /// Peer normalisation: the weight of the loss that keeps units equally active, and the
    /// momentum of each unit's running mean activity.
    public var peerWeight: Float = 0.03
    public var peerMomentum: Float = 0.9
    /// The linear classifier's own learning rate and weight decay (its other optimizer
    /// settings and the schedule are the layers').
    public var classifierLearningRate: Float = 1e-2
    public var classifierWeightDecay: Float = 3e-3
    /// How a negative row's wrong label is chosen (nil: `.random`, as in checkpoints written
    /// before the choice existed).
    public var negatives: NegativeLabels?

    /// A negative row's wrong label.
    public enum NegativeLabels: String, Sendable, Codable, CaseIterable {
        /// Drawn uniformly among the other classes, per batch.
        case random
        /// The wrong label of highest total goodness over the readout layers (the network's
        /// most confident mistake for the sample), chosen for each batch with the weights
        /// after every earlier batch: a batch waits for the one before it (no pipelining),
        /// and the choice costs a goodness pass over all K labels of the batch.
        case hard
    }

    /// The negatives in force: the given choice, or `.random`.
    public var negativesInForce: NegativeLabels { negatives ?? .random }

    public init() {}

    /// The layers' optimizer by default: SGD, momentum 0.9, rate 1e-3, weight decay 3e-4,
    /// the rate falling linearly to zero over the second half of the run.
    public static var layerOptimizer: OptimizerSettings {
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.learningRate = 1e-3
        settings.momentum = 0.9
        settings.weightDecay = 3e-4
        settings.linearCooldown = true
        return settings
    }
}

/// PEPITA with weight mirroring (Srinivasan et al., ICLR 2024; docs/learning-rules.md): the
/// feedback projection is a product of one matrix per layer, `F = -(B_1 B_2 ... B_L)` with
/// `B_l` [inputs, outputs] of layer l, and each `B_l` learns to mirror its layer's weights from
/// the layer's response to noise: `B_l <- (1 - rate decay) B_l + rate xi^T y / B`, `xi` centred
/// Gaussian noise of deviation `noise` and `y` the layer's output for it. Before each modulated
/// pass the factors are rescaled together so that F keeps the deviation of the fixed F,
/// `feedbackScale * sqrt(2 / inputs)`. The rate and decay are those of the authors'
/// configuration file (their command line's 0.1 and 0.5 diverged after about 14 epochs on
/// Fashion-MNIST, docs/performance.md).
public struct FeedbackMirroring: Sendable, Codable, Equatable {
    /// The factors' learning rate and weight decay (plain SGD, no momentum).
    public var rate: Float = 0.01
    public var decay: Float = 1e-4
    /// The deviation of the noise the layers respond to.
    public var noise: Float = 0.1
    /// Epochs at the start in which the factors mirror and the weights do not learn.
    public var preMirrorEpochs: Int = 0
    /// After those, the factors mirror in every `period`-th epoch (epochs e, from 0, with
    /// (e + 1) a multiple of it, as the authors' `--mirror`); 1: in every epoch.
    public var period: Int = 1

    public init(
        rate: Float = 0.01, decay: Float = 1e-4, noise: Float = 0.1, preMirrorEpochs: Int = 0,
        period: Int = 1
    ) {
        self.rate = rate
        self.decay = decay
        self.noise = noise
        self.preMirrorEpochs = preMirrorEpochs
        self.period = period
    }

    /// Whether the factors mirror in `epoch` (from 0).
    public func mirrors(in epoch: Int) -> Bool {
        epoch < preMirrorEpochs || (epoch + 1) % max(period, 1) == 0
    }
}
