/// How a spiking network's first block sees the image over its T steps (docs/spiking.md).
public enum SpikeEncoding: String, Sendable, Codable, CaseIterable {
    /// The image (pixels in 0...1) as the input current at every step.
    case direct
    /// At every step each pixel spikes with probability equal to its value (Bernoulli),
    /// seeded per batch.
    case rate
    /// Each pixel spikes once, at step round((1 − x)(T − 1)): the brightest first; a pixel
    /// of 0 never.
    case latency

    /// The value (kernel code) `Kernels/spiking.cl` names it by; nil for direct, which
    /// encodes nothing.
    var code: Int32? {
        switch self {
        case .direct: nil
        case .rate: 1
        case .latency: 2
        }
    }
}
