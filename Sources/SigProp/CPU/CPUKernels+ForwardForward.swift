import Foundation

/// Forward-Forward's per-layer work on the CPU: the same arithmetic as
/// Kernels/forward_forward.cl (which documents it), a row per task.
extension CPUKernels {
    static func forwardForwardRows(
        _ p: ForwardForwardRowShape, a: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, sumSquares: UnsafeMutablePointer<Float>,
        gradient: UnsafeMutablePointer<Float>?, rowLosses: UnsafeMutablePointer<Float>?,
        peer: UnsafePointer<Float>?
    ) {
        let d = p.columns
        parallelChunks(p.rows, minimumChunk: max(1, (1 << 14) / max(d, 1))) { range in
            rowSumSquares(a, rows: range, columns: d, relu: p.relu, into: sumSquares)
            for r in range {
                let row = a + r * d
                let ss = sumSquares[r]
                let scale = 1 / ((ss / Float(d)).squareRoot() + p.epsilon)
                let out = normalized + r * d
                for j in 0..<d { out[j] = (p.relu ? max(row[j], 0) : row[j]) * scale }
                guard r < p.lossRows, let gradient, let rowLosses else { continue }
                let s = ss - p.threshold
                let y: Float = r < p.positives ? 1 : 0
                let inverseRows = 1 / Float(p.lossRows)
                rowLosses[r] = (max(s, 0) + log1pf(expf(-abs(s))) - y * s) * inverseRows
                let coefficient = (1 / (1 + expf(-s)) - y) * inverseRows * 2
                let dRow = gradient + r * d
                if let peer, r < p.positives {
                    for j in 0..<d {
                        dRow[j] = coefficient * (p.relu ? max(row[j], 0) : row[j]) + peer[j]
                    }
                } else {
                    for j in 0..<d {
                        dRow[j] = coefficient * (p.relu ? max(row[j], 0) : row[j]) + 0
                    }
                }
            }
        }
    }

    /// Each row's sum of relu(x)² (of x² without `relu`), added in column order. Eight rows go
    /// at once, one per SIMD lane: each lane adds its row's terms in the same order as a loop
    /// over that row alone, so the sums are the same, but eight chains of additions overlap
    /// and ReLU is a select, where the scalar `max` branched on every sign.
    static func rowSumSquares(
        _ a: UnsafePointer<Float>, rows: Range<Int>, columns d: Int, relu: Bool,
        into sums: UnsafeMutablePointer<Float>
    ) {
        var r = rows.lowerBound
        while r + 8 <= rows.upperBound {
            let x = (0..<8).map { a + (r + $0) * d }
            var s = SIMD8<Float>()
            for j in 0..<d {
                var h = SIMD8<Float>(
                    x[0][j], x[1][j], x[2][j], x[3][j], x[4][j], x[5][j], x[6][j], x[7][j])
                // max(h, 0) as Swift's `max` gives it: 0 for -0 and below, NaN kept.
                if relu { h.replace(with: 0, where: h .<= 0) }
                s += h * h
            }
            for lane in 0..<8 { sums[r + lane] = s[lane] }
            r += 8
        }
        for r in r..<rows.upperBound {
            let x = a + r * d
            var ss: Float = 0
            for j in 0..<d {
                let h = relu ? max(x[j], 0) : x[j]
                ss += h * h
            }
            sums[r] = ss
        }
    }

    static func forwardForwardRelabelGradient(
        _ p: ForwardForwardRelabelShape, gradient g: UnsafePointer<Float>,
        inputs z: UnsafePointer<Float>, plan: UnsafePointer<Float>,
        into weightGradient: UnsafeMutablePointer<Float>
    ) {
        let (units, inputs, classes) = (p.units, p.inputs, p.classes)
        let entries = (0..<p.rows).map { r in
            (
                row: p.firstRow + r, from: Int(plan[3 * r + 1]), to: Int(plan[3 * r + 2]),
                s: z[Int(plan[3 * r]) * inputs + Int(plan[3 * r + 1])]
            )
        }
        // Each unit's K sums side by side, each taking the plan's terms in order as a work-item
        // of ff_relabel_gradient does: one pass over the plan per unit, not one per label.
        parallelChunks(units, minimumChunk: max(1, (1 << 14) / max(p.rows, 1))) { range in
            var sums = [Float](repeating: 0, count: classes)
            for n in range {
                for k in 0..<classes { sums[k] = 0 }
                for entry in entries {
                    let term = entry.s * g[entry.row * units + n]
                    if entry.to != entry.from {
                        sums[entry.to] += term
                        sums[entry.from] -= term
                    }
                }
                for k in 0..<classes { weightGradient[n * inputs + k] += sums[k] }
            }
        }
    }

    static func forwardForwardRelabel(
        _ p: ForwardForwardRelabelShape, a: UnsafePointer<Float>, inputs z: UnsafePointer<Float>,
        neutral: UnsafePointer<Float>?, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        plan: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>
    ) {
        let (units, inputs, classes) = (p.units, p.inputs, p.classes)
        // The label columns of W side by side ([K, N]) and their sums, so that each output
        // row is one pass over contiguous units.
        var labelColumns = [Float](repeating: 0, count: (classes + 1) * units)
        for n in 0..<units {
            var sum: Float = 0
            for k in 0..<classes {
                let w = weight[n * inputs + k]
                labelColumns[k * units + n] = w
                sum += w
            }
            labelColumns[classes * units + n] = sum
        }
        labelColumns.withUnsafeBufferPointer { columns in
            let columns = columns.baseAddress!
            parallelChunks(p.rows, minimumChunk: max(1, (1 << 14) / max(units, 1))) { range in
                for r in range {
                    let (source, from, to) = (
                        Int(plan[3 * r]), Int(plan[3 * r + 1]), Int(plan[3 * r + 2])
                    )
                    let s = z[source * inputs + from]
                    let (row, wFrom) = (a + source * units, columns + from * units)
                    let target = out + (p.firstRow + r) * units
                    if to >= 0 {
                        let wTo = columns + to * units
                        for n in 0..<units {
                            let image = row[n] - bias[n] - s * wFrom[n]
                            target[n] = image + s * wTo[n] + bias[n]
                        }
                    } else {
                        let label = neutral![source * inputs]
                        let (scale, sums) = (label * Float(classes) / s, columns + classes * units)
                        for n in 0..<units {
                            let image = row[n] - bias[n] - s * wFrom[n]
                            target[n] = scale * image + label * sums[n] + bias[n]
                        }
                    }
                }
            }
        }
    }

    static func forwardForwardPeer(
        a: UnsafePointer<Float>, columns d: Int, positives: Int,
        runningMean: UnsafeMutablePointer<Float>, peer: UnsafeMutablePointer<Float>,
        momentum: Float, weight: Float
    ) {
        // Row by row, so the reads run along memory; each column still sums its rows in order.
        var sums = [Float](repeating: 0, count: d)
        for i in 0..<positives {
            let row = a + i * d
            for j in 0..<d { sums[j] += max(row[j], 0) }
        }
        var total: Float = 0
        for j in 0..<d {
            let r = runningMean[j] * momentum + sums[j] / Float(positives) * (1 - momentum)
            runningMean[j] = r
            total += r
        }
        let mean = total / Float(d)
        let factor = weight * 2 / Float(d) * (1 - momentum) / Float(positives)
        for j in 0..<d { peer[j] = factor * (runningMean[j] - mean) }
    }
}
