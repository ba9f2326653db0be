import Foundation

/// One optimizer step as PyTorch computes it, for every parameter of one optimizer: the rule
/// (Adam, AMSGrad or SGD), its settings, this step's learning rate and its count. The one
/// value an update passes through, from `Optimizer.beginStep` to the kernels: the separate
/// step (`Device.step`) and the fused weight update (`Device.updateWeights`) take it on both
/// backends, with the parameter's state tensors in `stateNames` order.
public struct UpdateRule: Sendable, Equatable {
    public var kind: OptimizerKind
    public var learningRate: Float
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    /// SGD: momentum (0: none), dampening and Nesterov's variant.
    public var momentum: Float = 0
    public var dampening: Float = 0
    public var nesterov = false
    /// Steps taken, this one included (1-based: Adam's t; SGD's momentum buffer starts as the
    /// first step's gradient).
    public var step: Int

    public init(
        _ kind: OptimizerKind, learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
        epsilon: Float = 1e-8, weightDecay: Float = 0, momentum: Float = 0,
        dampening: Float = 0, nesterov: Bool = false, step: Int
    ) {
        self.kind = kind
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.step = step
    }

    /// Step `step` of an optimizer with `settings` at `learningRate`.
    public init(_ settings: OptimizerSettings, learningRate: Float, step: Int) {
        self.init(
            settings.kind, learningRate: learningRate, beta1: settings.beta1,
            beta2: settings.beta2, epsilon: settings.epsilon, weightDecay: settings.weightDecay,
            momentum: settings.momentum, nesterov: settings.nesterov, step: step)
    }

    /// The state a parameter keeps for this rule, in the order kernels take it.
    public var stateNames: [String] {
        switch kind {
        case .adam: ["m", "v"]
        case .amsgrad: ["m", "v", "v_max"]
        case .sgd: momentum == 0 ? [] : ["momentum"]
        }
    }

    // Bias corrections in double, as PyTorch forms them from Python floats.
    var stepSize: Float { Float(Double(learningRate) / (1 - pow(Double(beta1), Double(step)))) }
    var biasCorrection2Sqrt: Float { Float((1 - pow(Double(beta2), Double(step))).squareRoot()) }
    var firstStep: Bool { step == 1 }

    /// `parameter`'s state tensors for this rule.
    func state(of parameter: Parameter) throws -> [Tensor] {
        try stateNames.map { name in
            guard let tensor = parameter.state[name] else {
                throw SigPropError.configuration(
                    "\(parameter.name) has no optimizer state '\(name)' for \(kind.rawValue)")
            }
            return tensor
        }
    }

    /// Steps `parameters` from their gradient tensors (under data parallelism, the gradients
    /// averaged over the ranks first).
    public func apply(to parameters: [Parameter], on stream: Stream?) throws {
        if let exchange = parameters.first?.gradientExchange {
            try exchange.average(parameters.map(\.gradient), on: stream)
        }
        for parameter in parameters {
            try parameter.value.device.step(
                parameter.value, gradient: parameter.gradient, rule: self,
                state: try state(of: parameter), on: stream)
        }
    }
}
