/// How the spiking layers of a network (`lif<N>`, `lifconv<N>`) run and learn: the neuron,
/// the number of time steps a sample is shown for, and what each block's local loss reads.
/// Part of the network description (checkpoints store it); used only where the description
/// has spiking layers.
public struct SpikingSettings: Sendable, Equatable {
    /// What a block's local loss reads, averaged over the time steps (docs/spiking.md).
    public enum Learning: String, Sendable, Codable, CaseIterable {
        /// The membrane voltage itself: no surrogate, no change to the neuron.
        case voltage
        /// A surrogate of the spike taken from the membrane before the spike (`surrogate`).
        case surrogate
    }

    /// When a block's local loss is taken (docs/spiking.md).
    public enum LossTiming: String, Sendable, Codable, CaseIterable {
        /// Once per batch, on the time mean of what the loss reads.
        case mean
        /// At every step, on that step's values; the block's loss is the mean of the T.
        case step
    }

    /// Steps each sample is shown for.
    public var timesteps = 25
    /// How the first block sees the image over the steps.
    public var encoding: SpikeEncoding = .direct
    public var neuron = LIFNeuron()
    public var learning: Learning = .voltage
    public var surrogate: Surrogate = .arctan
    /// The surrogate's sharpness; nil: the surrogate's default (`Surrogate.defaultSlope`).
    public var slope: Float?
    public var lossTiming: LossTiming = .mean
    /// Whether every spiking layer learns its beta, its threshold (one scalar each per layer,
    /// as snnTorch's `learn_beta` and `learn_threshold`), starting from `neuron`'s.
    public var learnBeta = false
    public var learnThreshold = false
    /// Steps the blocks run at a time, all in step (docs/spiking.md, memory and `T`): memory
    /// then holds the spikes of one chunk, whatever `timesteps` is. nil: each block runs all
    /// the steps of a batch before the next block starts.
    public var timeChunk: Int?

    public init() {}

    /// Steps per chunk, the last chunk shorter where they do not divide `timesteps`.
    var chunks: [Range<Int>] {
        let size = max(1, min(timeChunk ?? timesteps, timesteps))
        return stride(from: 0, to: timesteps, by: size).map {
            $0..<min($0 + size, timesteps)
        }
    }

    /// The blocks' time loop: the representation is the membrane or the surrogate.
    var blockDynamics: LIFDynamics {
        LIFDynamics(
            neuron: neuron, steps: timesteps,
            surrogate: learning == .surrogate ? surrogate : nil, slope: slope,
            lossAtEveryStep: lossTiming == .step)
    }

    /// The output layer's: its logits are always the mean membrane.
    var outputDynamics: LIFDynamics { LIFDynamics(neuron: neuron, steps: timesteps) }

    /// Refuses settings no network can run, naming the setting and the fix.
    func validate() throws {
        guard timesteps >= 1 else {
            throw SigPropError.configuration(
                "--timesteps \(timesteps): a spiking network needs at least 1 time step")
        }
        guard neuron.beta.isFinite, (0...1).contains(neuron.beta) else {
            throw SigPropError.configuration(
                "--beta \(neuron.beta): the membrane decay must be in 0...1")
        }
        guard neuron.threshold.isFinite, neuron.threshold > 0 else {
            throw SigPropError.configuration(
                "--spike-threshold \(neuron.threshold): the threshold must be above 0")
        }
        if let slope, !(slope.isFinite && slope > 0) {
            throw SigPropError.configuration(
                "--surrogate-slope \(slope): the surrogate's sharpness must be above 0")
        }
        guard let timeChunk else { return }
        guard timeChunk >= 1 else {
            throw SigPropError.configuration(
                "--time-chunk \(timeChunk): a chunk holds at least 1 time step")
        }
        // A chunk's spikes are gone once the next chunk runs: what a block learns from must
        // be a sum that goes forward in time (docs/spiking.md, memory and T).
        let needsTrains = [
            (neuron.reset == .zero, "--reset zero"), (lossTiming == .step, "--spike-loss step"),
            (learnBeta, "--learn-beta"), (learnThreshold, "--learn-threshold"),
        ].filter(\.0).map(\.1)
        if !needsTrains.isEmpty {
            throw SigPropError.configuration(
                "--time-chunk \(timeChunk) keeps no spike train, so every block must learn from "
                    + "sums over the steps (a subtracting reset, the loss on the time mean, fixed "
                    + "beta and threshold), and "
                    + (needsTrains.count == 1
                        ? needsTrains[0] + " learns"
                        : needsTrains.dropLast().joined(separator: ", ") + " and "
                            + needsTrains.last! + " learn")
                    + " from the whole train: drop --time-chunk, or "
                    + (needsTrains.count == 1 ? "that setting" : "those settings"))
        }
    }
}

extension SpikingSettings: CustomStringConvertible {
    /// "25 steps, direct encoding, voltage learning, loss on the time mean, beta 0.95,
    /// threshold 1, subtract reset": what `train` prints before a spiking run.
    public var description: String {
        let learned =
            learning == .voltage
            ? "voltage learning"
            : "surrogate learning (\(surrogate.rawValue), k "
                + "\(slope ?? surrogate.defaultSlope))"
        return "\(timesteps) steps, \(encoding.rawValue) encoding, \(learned), loss "
            + (lossTiming == .mean ? "on the time mean" : "at every step")
            + ", beta \(neuron.beta)\(learnBeta ? " (learned)" : ""), threshold "
            + "\(neuron.threshold)\(learnThreshold ? " (learned)" : ""), "
            + "\(neuron.reset.rawValue) reset"
            + (timeChunk.map { ", \($0) steps at a time" } ?? "")
    }
}

/// In JSON descriptions: `"spiking": {"timesteps": 25, "encoding": "direct", "beta": 0.95,
/// "threshold": 1, "reset": "subtract", "learning": "voltage", "surrogate": "arctan",
/// "slope": 2, "loss_timing": "mean", "learn_beta": false, "learn_threshold": false,
/// "time_chunk": 5}`, every key optional.
extension SpikingSettings: Codable {
    enum CodingKeys: String, CodingKey {
        case timesteps, encoding, beta, threshold, reset, learning, surrogate, slope
        case lossTiming = "loss_timing"
        case learnBeta = "learn_beta"
        case learnThreshold = "learn_threshold"
        case timeChunk = "time_chunk"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        timesteps = try c.decodeIfPresent(Int.self, forKey: .timesteps) ?? timesteps
        encoding = try c.decodeIfPresent(SpikeEncoding.self, forKey: .encoding) ?? .direct
        neuron.beta = try c.decodeIfPresent(Float.self, forKey: .beta) ?? neuron.beta
        neuron.threshold = try c.decodeIfPresent(Float.self, forKey: .threshold) ?? 1
        neuron.reset = try c.decodeIfPresent(LIFNeuron.Reset.self, forKey: .reset) ?? .subtract
        learning = try c.decodeIfPresent(Learning.self, forKey: .learning) ?? .voltage
        surrogate = try c.decodeIfPresent(Surrogate.self, forKey: .surrogate) ?? .arctan
        slope = try c.decodeIfPresent(Float.self, forKey: .slope)
        lossTiming = try c.decodeIfPresent(LossTiming.self, forKey: .lossTiming) ?? .mean
        learnBeta = try c.decodeIfPresent(Bool.self, forKey: .learnBeta) ?? false
        learnThreshold = try c.decodeIfPresent(Bool.self, forKey: .learnThreshold) ?? false
        timeChunk = try c.decodeIfPresent(Int.self, forKey: .timeChunk)
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(timesteps, forKey: .timesteps)
        try c.encode(encoding, forKey: .encoding)
        try c.encode(neuron.beta, forKey: .beta)
        try c.encode(neuron.threshold, forKey: .threshold)
        try c.encode(neuron.reset, forKey: .reset)
        try c.encode(learning, forKey: .learning)
        try c.encode(surrogate, forKey: .surrogate)
        try c.encodeIfPresent(slope, forKey: .slope)
        try c.encode(lossTiming, forKey: .lossTiming)
        if learnBeta { try c.encode(learnBeta, forKey: .learnBeta) }
        if learnThreshold { try c.encode(learnThreshold, forKey: .learnThreshold) }
        try c.encodeIfPresent(timeChunk, forKey: .timeChunk)
    }
}
