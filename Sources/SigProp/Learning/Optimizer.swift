import Foundation

/// A trainable tensor with its gradient and its optimizer state, all on one device.
public final class Parameter: @unchecked Sendable {
    public let name: String
    public let value: Tensor
    public let gradient: Tensor
    /// Optimizer state (Adam: m, v and for AMSGrad v_max; SGD: the momentum buffer).
    public internal(set) var state: [String: Tensor] = [:]
    /// Data parallelism: what averages the gradient over the ranks before each step.
    var gradientExchange: GradientExchange?

    public init(name: String, value: Tensor) throws {
        self.name = name
        self.value = value
        self.gradient = try value.device.zeros(value.shape)
    }
}

/// Which update rule a block's optimizer applies.
public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
    case adam, amsgrad, sgd
}

/// The optimizer settings of every block (each block gets its own optimizer with these).
/// Defaults are the reference's: Adam, lr 5e-4, betas 0.9/0.999, eps 1e-8, no weight decay.
public struct OptimizerSettings: Sendable, Codable, Equatable {
    public var kind: OptimizerKind = .adam
    public var learningRate: Float = 5e-4
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    public var momentum: Float = 0.9
    public var nesterov = false
    /// Multi-step decay: the rate is multiplied by `gamma` at each of these epochs (0-based).
    public var milestones: [Int] = []
    public var gamma: Float = 0.1
    /// Cosine annealing to this rate over the run's epochs, in place of the multi-step decay
    /// (nil: off; checkpoints written before it existed have none).
    public var cosineFloor: Float?
    /// The rate held for the first half of the run, then falling linearly towards zero (the
    /// schedule of Forward-Forward's common reimplementation); nil or false: off.
    public var linearCooldown: Bool?

    public init() {}

    /// The schedule in words for a run of `epochs`, e.g. "lr 0.0005, cosine to 0.0 over 10
    /// epochs" or "lr 0.01, x0.1 after epochs 60, 90".
    public func scheduleSummary(epochs: Int) -> String {
        let start = "lr \(learningRate)"
        if linearCooldown == true {
            return start + ", linear cooldown after epoch \(Self.cooldownStart(of: epochs) + 1)"
        }
        if let floor = cosineFloor {
            return start + ", cosine to \(floor) over \(epochs) epochs"
        }
        let decays = milestones.filter { $0 < epochs }
        guard !decays.isEmpty else { return start }
        return start + ", x\(gamma) after epochs " + decays.map(String.init).joined(separator: ", ")
    }

    /// The last epoch (0-based) at the full rate under the linear cooldown.
    private static func cooldownStart(of epochs: Int) -> Int { max(epochs, 1) / 2 }

    /// The learning rate in force during `epoch` (0-based) of a run of `epochs`: every block's
    /// optimizer steps with it for the whole epoch.
    public func learningRate(epoch: Int, of epochs: Int) -> Float {
        if linearCooldown == true {
            // Epoch e (0-based, as the reimplementation counts) of E past E / 2 runs at
            // rate * 2 (1 + E - e) / E: the last epoch at 4 / E of the rate.
            let total = max(epochs, 1)
            guard epoch > Self.cooldownStart(of: epochs) else { return learningRate }
            return learningRate * 2 * Float(1 + total - epoch) / Float(total)
        }
        guard let floor = cosineFloor else {
            return milestones.filter { epoch >= $0 }.reduce(learningRate) { rate, _ in
                rate * gamma
            }
        }
        // PyTorch's CosineAnnealingLR stepped once per epoch with T_max = epochs.
        let progress = Double(epoch) / Double(max(epochs, 1))
        return floor + (learningRate - floor) * Float((1 + cos(Double.pi * progress)) / 2)
    }
}

/// One block's optimizer: steps every parameter of the block, state on the device.
public final class Optimizer: @unchecked Sendable {
    public let settings: OptimizerSettings
    public let parameters: [Parameter]
    /// Steps taken so far (Adam's t is `steps` after the increment).
    public internal(set) var steps = 0

    public init(settings: OptimizerSettings, parameters: [Parameter]) throws {
        self.settings = settings
        self.parameters = parameters
        for parameter in parameters {
            let device = parameter.value.device
            let shape = parameter.value.shape
            switch settings.kind {
            case .adam:
                parameter.state = ["m": try device.zeros(shape), "v": try device.zeros(shape)]
            case .amsgrad:
                parameter.state = [
                    "m": try device.zeros(shape), "v": try device.zeros(shape),
                    "v_max": try device.zeros(shape),
                ]
            case .sgd:
                parameter.state =
                    settings.momentum == 0 ? [:] : ["momentum": try device.zeros(shape)]
            }
        }
    }

    /// Applies one update from the parameters' current gradients at `learningRate`.
    public func step(learningRate: Float, on stream: Stream? = nil) throws {
        try beginStep(learningRate: learningRate).apply(to: parameters, on: stream)
    }

    /// Counts one step and returns its rule, for layers that step their own parameters
    /// (fused into their gradient products where they can). Every parameter of this
    /// optimizer must then be stepped once with it.
    public func beginStep(learningRate: Float) -> UpdateRule {
        steps += 1
        return UpdateRule(settings, learningRate: learningRate, step: steps)
    }
}
