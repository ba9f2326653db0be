/// The leaky integrate-and-fire time loop on the CPU: the arithmetic of Kernels/spiking.cl
/// (which documents it), each task a run of (sample, unit) entries swept step by step so the
/// inner loop runs along memory.
extension CPUKernels {
    static func lifForward(
        _ d: LIFDynamics, plane: Int, constantCurrent: Bool, current: UnsafePointer<Float>,
        membrane: UnsafeMutablePointer<Float>, spikes: UnsafeMutablePointer<Float>,
        representation: UnsafeMutablePointer<Float>, rate: UnsafeMutablePointer<Float>,
        stepRepresentation: UnsafeMutablePointer<Float>?
    ) {
        let (beta, threshold, zero) = (d.neuron.beta, d.neuron.threshold, d.neuron.reset == .zero)
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            var u = [Float](repeating: 0, count: range.count)
            var s = u
            var sum = u
            var count = u
            for t in 0..<d.steps {
                let input = current + (constantCurrent ? 0 : t * plane) + range.lowerBound
                let (m, spike) = (membrane + t * plane + range.lowerBound, spikes + t * plane)
                for j in 0..<range.count {
                    let next =
                        zero
                        ? (1 - s[j]) * (beta * u[j] + input[j])
                        : beta * u[j] + input[j] - threshold * s[j]
                    u[j] = next
                    s[j] = next > threshold ? 1 : 0
                    m[j] = next
                    spike[range.lowerBound + j] = s[j]
                    let r = d.represent(next)
                    stepRepresentation?[t * plane + range.lowerBound + j] = r
                    sum[j] += r
                    count[j] += s[j]
                }
            }
            let steps = Float(d.steps)
            for j in 0..<range.count {
                representation[range.lowerBound + j] = sum[j] / steps
                rate[range.lowerBound + j] = count[j] / steps
            }
        }
    }

    static func lifBackward(
        _ d: LIFDynamics, plane: Int, constantCurrent: Bool, perStep: Bool,
        membrane: UnsafePointer<Float>, gradient: UnsafePointer<Float>,
        currentGradient: UnsafeMutablePointer<Float>
    ) {
        let (beta, threshold, zero) = (d.neuron.beta, d.neuron.threshold, d.neuron.reset == .zero)
        let inverseSteps = 1 / Float(d.steps)
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            var v = [Float](repeating: 0, count: range.count)
            var factor = v
            var total = v
            for t in stride(from: d.steps - 1, through: 0, by: -1) {
                let m = membrane + t * plane + range.lowerBound
                let g = gradient + (perStep ? t * plane : 0) + range.lowerBound
                for j in 0..<range.count {
                    let u = m[j]
                    v[j] = g[j] * inverseSteps * d.representationSlope(u) + factor[j] * v[j]
                    let previousSpike: Float = t > 0 && (m - plane)[j] > threshold ? 1 : 0
                    let keep: Float = zero ? 1 - previousSpike : 1
                    if constantCurrent {
                        total[j] += keep * v[j]
                    } else {
                        currentGradient[t * plane + range.lowerBound + j] = keep * v[j]
                    }
                    factor[j] = beta * keep
                }
            }
            if constantCurrent {
                for j in 0..<range.count { currentGradient[range.lowerBound + j] = total[j] }
            }
        }
    }

    /// Kernels/spiking.cl's spike_encode: `plane` pixels as `steps` planes of spikes.
    static func spikeEncode(
        _ encoding: SpikeEncoding, steps: Int, plane: Int, seed: UInt32,
        images: UnsafePointer<Float>, trains: UnsafeMutablePointer<Float>
    ) {
        let stream = spikeHash(seed)
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            for i in range {
                let x = min(max(images[i], 0), 1)
                let delay = (1 - x) * Float(steps - 1)
                let fireAt = x > 0 ? Int(delay + 0.5) : -1
                for t in 0..<steps {
                    let fires: Bool
                    if encoding == .rate {
                        let index = UInt32(truncatingIfNeeded: t &* plane &+ i)
                        let h = spikeHash(spikeHash(index) &+ stream)
                        fires = Float(h >> 8) * (1 / 16_777_216) < x
                    } else {
                        fires = t == fireAt
                    }
                    trains[t * plane + i] = fires ? 1 : 0
                }
            }
        }
    }

    /// Kernels/spiking.cl's spike_hash (Wellons' lowbias32).
    static func spikeHash(_ value: UInt32) -> UInt32 {
        var x = value
        x ^= x >> 16
        x &*= 0x7feb_352d
        x ^= x >> 15
        x &*= 0x846c_a68b
        x ^= x >> 16
        return x
    }
}
