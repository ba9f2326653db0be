/// A spiking layer's beta and threshold on the device, where the kernels read them: fixed
/// values, or parameters its block learns (`SpikingSettings.learnBeta`, `learnThreshold`,
/// as snnTorch's `learn_beta` and `learn_threshold`: one scalar each per layer). One object
/// serves every layer that shares the neurons (the signal block's input and context parts),
/// so their gradients add up and the block steps them once.
public final class NeuronParameters {
    /// [1]: the membrane decay (the kernels clamp it to 0...1) and the threshold.
    public let beta: Tensor
    public let threshold: Tensor
    /// The learned ones, for the block's optimizer: beta, then the threshold.
    public let parameters: [Parameter]
    /// d loss / d (beta, threshold) summed over one learning step's passes.
    private let sums: Tensor
    private var accumulated = false

    init(name: String, neuron: LIFNeuron, learnBeta: Bool, learnThreshold: Bool, device: Device)
        throws
    {
        beta = try device.tensor([neuron.beta], shape: [1])
        threshold = try device.tensor([neuron.threshold], shape: [1])
        parameters =
            (learnBeta ? [try Parameter(name: "\(name).beta", value: beta)] : [])
            + (learnThreshold ? [try Parameter(name: "\(name).threshold", value: threshold)] : [])
        sums = try device.zeros([2])
    }

    /// Whether the block learns beta or the threshold.
    public var learns: Bool { !parameters.isEmpty }

    /// Adds one pass's per-entry shares ([entries, 2], from `Device.lifBackward`).
    func accumulate(_ partials: Tensor, on stream: Stream?) throws {
        try partials.device.channelSums(
            partials, channels: 2, into: sums, beta: accumulated ? 1 : 0, on: stream)
        accumulated = true
    }

    /// Steps the learned values by `rule` from what the step's passes added, and starts over.
    func step(_ rule: UpdateRule, on stream: Stream?) throws {
        guard learns, accumulated else { return }
        let device = sums.device
        for parameter in parameters {
            let row = parameter.value === beta ? 0 : 1
            try device.copyRows(
                sums.reshaped([2, 1]), row..<(row + 1),
                into: try parameter.gradient.reshaped([1, 1]), at: 0, on: stream)
        }
        try rule.apply(to: parameters, on: stream)
        accumulated = false
    }
}
