/// The leaky integrate-and-fire time loop on the CPU: the arithmetic of Kernels/spiking.cl
/// (which documents it), each task a run of (sample, unit) entries swept step by step so the
/// inner loop runs along memory.
extension CPUKernels {
    /// Units swept together through the T steps: their state stays in L1 while the inner
    /// loops, free of branches, vectorise.
    static let lifTile = 256

    /// Walks `range` in tiles of `lifTile` units: `body` gets a tile's first unit, its length
    /// and `planes` scratch planes of `lifTile` values each, zeroed for every tile.
    static func forEachLIFTile(
        _ range: Range<Int>, scratchPlanes planes: Int,
        _ body: (_ tile: Int, _ count: Int, _ scratch: UnsafeMutablePointer<Float>) -> Void
    ) {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: planes * lifTile)
        defer { scratch.deallocate() }
        for tile in stride(from: range.lowerBound, to: range.upperBound, by: lifTile) {
            scratch.initialize(repeating: 0, count: planes * lifTile)
            body(tile, min(lifTile, range.upperBound - tile), scratch)
        }
    }

    static func lifForward(
        _ d: LIFDynamics, plane: Int, constantCurrent: Bool, current: UnsafePointer<Float>,
        membrane: UnsafeMutablePointer<Float>?, spikes: UnsafeMutablePointer<Float>,
        representation: UnsafeMutablePointer<Float>, rate: UnsafeMutablePointer<Float>,
        stepRepresentation: UnsafeMutablePointer<Float>?, betaValue: UnsafePointer<Float>,
        thresholdValue: UnsafePointer<Float>, steps chunk: Range<Int>,
        state carried: UnsafeMutablePointer<Float>?
    ) {
        let (beta, threshold) = (min(max(betaValue[0], 0), 1), thresholdValue[0])
        let zero = d.neuron.reset == .zero
        let resumes = chunk.lowerBound > 0
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            forEachLIFTile(range, scratchPlanes: 6) { tile, n, state in
                let (u, s, sum, count) = (
                    state, state + lifTile, state + 2 * lifTile, state + 3 * lifTile
                )
                let (m, r) = (state + 4 * lifTile, state + 5 * lifTile)
                if resumes, let carried {
                    // The spike before the chunk is its last membrane's.
                    for j in 0..<n {
                        u[j] = carried[tile + j]
                        s[j] = u[j] > threshold ? 1 : 0
                    }
                }
                for t in 0..<chunk.count {
                    let input = current + (constantCurrent ? 0 : t * plane) + tile
                    let spike = spikes + t * plane + tile
                    if zero {
                        for j in 0..<n { m[j] = (1 - s[j]) * (beta * u[j] + input[j]) }
                    } else {
                        for j in 0..<n { m[j] = beta * u[j] + input[j] - threshold * s[j] }
                    }
                    for j in 0..<n {
                        u[j] = m[j]
                        s[j] = m[j] > threshold ? 1 : 0
                        spike[j] = s[j]
                        count[j] += s[j]
                    }
                    membrane?.advanced(by: t * plane + tile).update(from: m, count: n)
                    if let surrogate = d.surrogate {
                        // One loop per surrogate, so that each inlines into a vector loop.
                        switch surrogate {
                        case .arctan:
                            for j in 0..<n {
                                r[j] = Surrogate.arctan.value(m[j] - threshold, slope: d.slope)
                            }
                        case .fastSigmoid:
                            for j in 0..<n {
                                r[j] = Surrogate.fastSigmoid.value(
                                    m[j] - threshold, slope: d.slope)
                            }
                        }
                        for j in 0..<n { sum[j] += r[j] }
                        stepRepresentation?.advanced(by: t * plane + tile).update(
                            from: r, count: n)
                    } else {
                        for j in 0..<n { sum[j] += m[j] }
                        stepRepresentation?.advanced(by: t * plane + tile).update(
                            from: m, count: n)
                    }
                }
                let steps = Float(d.steps)
                for j in 0..<n {
                    let (mean, spiked) = (sum[j] / steps, count[j] / steps)
                    representation[tile + j] = resumes ? representation[tile + j] + mean : mean
                    rate[tile + j] = resumes ? rate[tile + j] + spiked : spiked
                }
                carried?.advanced(by: tile).update(from: u, count: n)
            }
        }
    }

    /// `membrane` is read for a surrogate's slope and beta's gradient only
    /// (`Device.lifBackward` requires it there); `neuronPartials` ([plane, 2]): each entry's
    /// share of d loss / d beta and d loss / d threshold, where the neuron learns.
    static func lifBackward(
        _ d: LIFDynamics, plane: Int, constantCurrent: Bool, perStep: Bool,
        membrane: UnsafePointer<Float>?, spikes: UnsafePointer<Float>,
        gradient: UnsafePointer<Float>, currentGradient: UnsafeMutablePointer<Float>,
        betaValue: UnsafePointer<Float>, thresholdValue: UnsafePointer<Float>,
        neuronPartials: UnsafeMutablePointer<Float>?
    ) {
        let (rawBeta, threshold) = (betaValue[0], thresholdValue[0])
        let beta = min(max(rawBeta, 0), 1)
        let zero = d.neuron.reset == .zero
        let inverseSteps = 1 / Float(d.steps)
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            forEachLIFTile(range, scratchPlanes: 6) { tile, n, state in
                let (v, factor, total, g) = (
                    state, state + lifTile, state + 2 * lifTile, state + 3 * lifTile
                )
                let (dBeta, dThreshold) = (state + 4 * lifTile, state + 5 * lifTile)
                for t in stride(from: d.steps - 1, through: 0, by: -1) {
                    let stepGradient = gradient + (perStep ? t * plane : 0) + tile
                    if let surrogate = d.surrogate, let membrane {
                        let m = membrane + t * plane + tile
                        for j in 0..<n {
                            g[j] =
                                stepGradient[j] * inverseSteps
                                * surrogate.slope(m[j] - threshold, slope: d.slope)
                        }
                        // r(U - threshold): the threshold takes the slope's opposite.
                        if neuronPartials != nil { for j in 0..<n { dThreshold[j] -= g[j] } }
                    } else {
                        for j in 0..<n { g[j] = stepGradient[j] * inverseSteps }
                    }
                    for j in 0..<n { v[j] = g[j] + factor[j] * v[j] }
                    if neuronPartials != nil, t > 0, let membrane {
                        // dU[t]/dbeta = keep U[t-1]; dU[t]/dthreshold = -S[t-1] (subtract).
                        let (previous, spiked) = (
                            membrane + (t - 1) * plane + tile, spikes + (t - 1) * plane + tile
                        )
                        for j in 0..<n {
                            let keep = zero ? 1 - spiked[j] : 1
                            dBeta[j] += v[j] * keep * previous[j]
                            if !zero { dThreshold[j] -= v[j] * spiked[j] }
                        }
                    }
                    // d loss / d I[t] = keep · V[t]; keep = 1 − S[t−1] under a zero reset.
                    let out = constantCurrent ? total : currentGradient + t * plane + tile
                    if zero && t > 0 {
                        let previous = spikes + (t - 1) * plane + tile
                        for j in 0..<n {
                            let keep = 1 - previous[j]
                            out[j] = (constantCurrent ? out[j] : 0) + keep * v[j]
                            factor[j] = beta * keep
                        }
                    } else {
                        for j in 0..<n {
                            out[j] = (constantCurrent ? out[j] : 0) + v[j]
                            factor[j] = beta
                        }
                    }
                }
                if constantCurrent { (currentGradient + tile).update(from: total, count: n) }
                if let neuronPartials {
                    // torch.clamp's gradient: none outside 0...1.
                    let inside: Float = rawBeta >= 0 && rawBeta <= 1 ? 1 : 0
                    for j in 0..<n {
                        neuronPartials[2 * (tile + j)] = inside * dBeta[j]
                        neuronPartials[2 * (tile + j) + 1] = dThreshold[j]
                    }
                }
            }
        }
    }

    /// Kernels/spiking.cl's lif_surrogate_gradient over `count` planes.
    static func lifSurrogateGradient(
        _ d: LIFDynamics, count: Int, plane: Int, membrane: UnsafePointer<Float>,
        gradient: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>, thresholdValue: UnsafePointer<Float>
    ) {
        guard let surrogate = d.surrogate else { return }
        let threshold = thresholdValue[0]
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            for t in 0..<count {
                let (m, o, w) = (membrane + t * plane, out + t * plane, weight[t])
                for i in range {
                    o[i] = w * surrogate.slope(m[i] - threshold, slope: d.slope) * gradient[i]
                }
            }
        }
    }

    /// Kernels/spiking.cl's spike_encode: `plane` pixels as the planes of steps `chunk` of a
    /// `steps`-step train.
    static func spikeEncode(
        _ encoding: SpikeEncoding, steps: Int, chunk: Range<Int>, plane: Int, seed: UInt32,
        images: UnsafePointer<Float>, trains: UnsafeMutablePointer<Float>
    ) {
        let stream = spikeHash(seed)
        parallelChunks(plane, minimumChunk: 1 << 12) { range in
            for i in range {
                let x = min(max(images[i], 0), 1)
                let delay = (1 - x) * Float(steps - 1)
                let fireAt = x > 0 ? Int(delay + 0.5) : -1
                for t in chunk {
                    let fires: Bool
                    if encoding == .rate {
                        let index = UInt32(truncatingIfNeeded: t &* plane &+ i)
                        let h = spikeHash(spikeHash(index) &+ stream)
                        fires = Float(h >> 8) * (1 / 16_777_216) < x
                    } else {
                        fires = t == fireAt
                    }
                    trains[(t - chunk.lowerBound) * plane + i] = fires ? 1 : 0
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
