import Foundation

/// A leaky integrate-and-fire neuron (snnTorch's `Leaky`): the membrane decays by `beta` each
/// step, integrates its input current, and spikes when it exceeds `threshold`; the spike
/// resets it at the next step (docs/spiking.md).
public struct LIFNeuron: Sendable, Codable, Equatable {
    /// What a spike does to the membrane at the next step.
    public enum Reset: String, Sendable, Codable, CaseIterable {
        /// The threshold is subtracted: U[t] = beta U[t-1] + I[t] - threshold S[t-1].
        case subtract
        /// The membrane restarts from zero: U[t] = (1 - S[t-1]) (beta U[t-1] + I[t]).
        case zero
    }

    /// Membrane decay per step, in 0...1.
    public var beta: Float = 0.95
    public var threshold: Float = 1
    public var reset: Reset = .subtract

    public init(beta: Float = 0.95, threshold: Float = 1, reset: Reset = .subtract) {
        self.beta = beta
        self.threshold = threshold
        self.reset = reset
    }
}

/// A smooth stand-in for the spike, a sigmoid of u - threshold in 0...1 whose slope is the
/// surrogate gradient of snnTorch's function of that name. Signal Propagation attaches the
/// learning signal to it before the spike: the spike itself is never differentiated.
public enum Surrogate: String, Sendable, Codable, CaseIterable {
    /// r = 1/2 (1 + k x / (1 + k |x|)): slope k/2 / (1 + k |x|)^2 (k/2 times snnTorch's).
    case fastSigmoid = "fast-sigmoid"
    /// r = 1/2 + atan(pi/2 k x) / pi: slope k/2 / (1 + (pi/2 k x)^2), snnTorch's.
    case arctan

    /// snnTorch's default sharpness k: 25 for the fast sigmoid, 2 for arctan.
    public var defaultSlope: Float { self == .fastSigmoid ? 25 : 2 }

    /// The value (kernel code) `Kernels/spiking.cl` names it by.
    var code: Int32 { self == .fastSigmoid ? 1 : 2 }

    /// r(x) for x = u - threshold.
    @inline(__always)
    func value(_ x: Float, slope k: Float) -> Float {
        switch self {
        case .fastSigmoid: 0.5 * (1 + k * x / (1 + k * abs(x)))
        case .arctan: 0.5 + Self.arctangent(0.5 * .pi * k * x) / .pi
        }
    }

    /// atan(a) within 1.4e-7 (libm's atanf: within 0.9e-7), by Cephes' single-precision
    /// method: the argument reduced to |a| <= tan(pi/8) by atan(a) = pi/4 + atan((a - 1) /
    /// (a + 1)) or pi/2 - atan(1/a), then an odd polynomial. Branch-free, so the CPU loops
    /// that take it at every step of every unit vectorise; a libm call per value took 43% of
    /// a surrogate epoch.
    @inline(__always)
    static func arctangent(_ a: Float) -> Float {
        let x = abs(a)
        let large = x > 2.414_213_5
        let middle = !large && x > 0.414_213_57
        let reduced = large ? -1 / x : middle ? (x - 1) / (x + 1) : x
        let offset: Float = large ? .pi / 2 : middle ? .pi / 4 : 0
        let z = reduced * reduced
        let polynomial =
            (((8.053_744_5e-2 * z - 1.387_768_6e-1) * z + 1.997_771_1e-1) * z - 3.333_294_9e-1)
            * z * reduced + reduced
        let y = offset + polynomial
        return a < 0 ? -y : y
    }

    /// dr/dx.
    func slope(_ x: Float, slope k: Float) -> Float {
        switch self {
        case .fastSigmoid:
            let d = 1 + k * abs(x)
            return 0.5 * k / (d * d)
        case .arctan:
            let a = 0.5 * .pi * k * x
            return 0.5 * k / (1 + a * a)
        }
    }
}

/// A block's time loop: its neurons, the number of steps, and what its local loss reads, the
/// time mean of the membrane or of a surrogate of the spike.
public struct LIFDynamics: Sendable, Equatable {
    public var neuron: LIFNeuron
    public var steps: Int
    /// nil: the membrane (learning from the voltage alone).
    public var surrogate: Surrogate?
    public var slope: Float
    /// Whether the local loss is taken at every step (each step's values kept) rather than
    /// once on the time mean.
    public var lossAtEveryStep: Bool

    public init(
        neuron: LIFNeuron, steps: Int, surrogate: Surrogate? = nil, slope: Float? = nil,
        lossAtEveryStep: Bool = false
    ) {
        self.neuron = neuron
        self.steps = steps
        self.surrogate = surrogate
        self.slope = slope ?? surrogate?.defaultSlope ?? 0
        self.lossAtEveryStep = lossAtEveryStep
    }

    /// Whether the gradient reads each step's membrane (a surrogate's slope); the voltage's
    /// gradient needs only the spikes.
    public var gradientReadsMembrane: Bool { surrogate != nil }

    /// Whether d loss / d the current at each step is d loss / d the representation times a
    /// factor of the step alone (the voltage, a subtracting reset, the loss on the time mean;
    /// the neurons' beta and threshold fixed besides): then a synapse learns from its
    /// input's weighted time mean and needs no train (docs/spiking.md, the gradient).
    public var learnsFromTimeMean: Bool {
        surrogate == nil && neuron.reset == .subtract && !lossAtEveryStep
    }
}
