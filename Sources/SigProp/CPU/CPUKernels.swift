import CBLAS
import Dispatch
import Foundation

/// The CPU twins of the OpenCL kernels, on raw pointers. Matrix products go to OpenBLAS.
enum CPUKernels {
    /// Cores one operation may spread over: all of them, or fewer on a stream that shares the
    /// machine with other stage workers (set per operation by `CPUQueue`).
    @TaskLocal static var cores = machineCores
    /// The machine's cores: products are split by their shape and this, never by `cores`, so a
    /// stream limited to fewer cores computes the same numbers (OpenBLAS's sums can depend on
    /// the block it is given).
    static let machineCores = ProcessInfo.processInfo.activeProcessorCount

    static func activate(_ x: Float, _ activation: Activation) -> Float {
        switch activation {
        case .identity: x
        case .relu: x > 0 ? x : 0
        case .leakyRelu: x > 0 ? x : Activation.leakySlope * x
        case .tanh: Foundation.tanh(x)
        }
    }

    /// Element-wise loops run on every core for large tensors; the switch is hoisted out of
    /// the loop so each case vectorises.
    static func activate(
        _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
        _ activation: Activation
    ) {
        let slope = Activation.leakySlope
        parallelChunks(count) { range in
            switch activation {
            case .identity: if x != UnsafePointer(y) { for i in range { y[i] = x[i] } }
            case .relu: for i in range { y[i] = max(x[i], 0) }
            case .leakyRelu: for i in range { y[i] = x[i] > 0 ? x[i] : slope * x[i] }
            case .tanh: for i in range { y[i] = Foundation.tanh(x[i]) }
            }
        }
    }

    /// `y = alpha x + beta y`, where `beta` 0 never reads `y`. The test on `beta` is out of
    /// the loop so that each case vectorises; large tensors run on every core.
    static func axpby(
        alpha: Float, _ x: UnsafePointer<Float>, beta: Float, _ y: UnsafeMutablePointer<Float>,
        count: Int
    ) {
        parallelChunks(count) { range in
            if beta == 0 {
                for i in range { y[i] = alpha * x[i] + 0 }
            } else {
                for i in range { y[i] = alpha * x[i] + beta * y[i] }
            }
        }
    }

    static func activationGradient(
        _ a: UnsafePointer<Float>, gradient g: UnsafePointer<Float>,
        into r: UnsafeMutablePointer<Float>,
        count: Int, _ activation: Activation
    ) {
        let slope = Activation.leakySlope
        parallelChunks(count) { range in
            switch activation {
            case .identity: for i in range { r[i] = g[i] }
            case .relu: for i in range { r[i] = a[i] > 0 ? g[i] : 0 }
            case .leakyRelu: for i in range { r[i] = a[i] > 0 ? g[i] : slope * g[i] }
            case .tanh: for i in range { r[i] = g[i] * (1 - a[i] * a[i]) }
            }
        }
    }

    static func scaleShiftChannels(
        _ x: UnsafePointer<Float>, scale: UnsafePointer<Float>, shift: UnsafePointer<Float>?,
        into out: UnsafeMutablePointer<Float>, count: Int, channels: Int, inner: Int
    ) {
        let rows = count / (channels * inner)
        if inner == 1 {
            // Dense activations: a row is one entry per channel, so the channel loop is the
            // contiguous one and vectorises (the general loop below runs it one entry at a time).
            parallelChunks(rows, minimumChunk: max(1, (1 << 15) / channels)) { range in
                for o in range {
                    let (row, result) = (x + o * channels, out + o * channels)
                    if let shift {
                        for c in 0..<channels { result[c] = row[c] * scale[c] + shift[c] }
                    } else {
                        for c in 0..<channels { result[c] = row[c] * scale[c] + 0 }
                    }
                }
            }
            return
        }
        if rows * channels == 1 {
            // One run (a whole tensor rescaled): its entries split over the cores.
            let (s, b) = (scale[0], shift?[0] ?? 0)
            parallelChunks(inner) { range in
                for i in range { out[i] = x[i] * s + b }
            }
            return
        }
        parallelChunks(rows, minimumChunk: max(1, (1 << 15) / (channels * inner))) { range in
            for o in range {
                for c in 0..<channels {
                    let base = (o * channels + c) * inner
                    let (s, b) = (scale[c], shift?[c] ?? 0)
                    for i in 0..<inner { out[base + i] = x[base + i] * s + b }
                }
            }
        }
    }

    /// C = alpha op(A) op(B) + beta C, then the bias along C's columns and `s.activation`.
    static func gemm(
        _ s: GemmShape, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>? = nil
    ) {
        guard s.m > 0, s.n > 0 else { return }
        if s.k == 0 {
            // BLAS leaves C untouched when K = 0 only if beta = 1; state the result directly.
            for i in 0..<(s.m * s.n) { c[i] = s.beta == 0 ? 0 : s.beta * c[i] }
            return biasActivation(s, c: c, bias: bias, rows: 0..<s.m, columns: 0..<s.n)
        }
        // Products from 2^18 multiply-adds up are split into parts run over the cores
        // (CPUWorkers), each a single-threaded OpenBLAS call (OpenBLAS runs with one thread, see
        // CPUBackend.init). With OpenBLAS's own threads instead, 128x128x1024 and 256^3 ran at
        // one core's speed behind the queue, and the thin output-layer products (128x10xK) at
        // a third of this split's speed.
        let parts = productParts(multiplyAdds: s.m * s.n * s.k)
        let splitRows = s.m >= s.n
        let extent = splitRows ? s.m : s.n
        guard parts > 1, extent >= 2 * parts else {
            sgemmPart(s, a: a, b: b, c: c, rows: 0..<s.m, columns: 0..<s.n)
            return biasActivation(s, c: c, bias: bias, rows: 0..<s.m, columns: 0..<s.n)
        }
        // Each part adds the bias to its own block of C while that block is in its core's
        // cache, so the pass costs no second trip through memory and runs on every core.
        CPUWorkers.shared.run(parts: parts, threads: cores) { part in
            let range = share(part, of: parts, extent)
            let (rows, columns) = splitRows ? (range, 0..<s.n) : (0..<s.m, range)
            sgemmPart(s, a: a, b: b, c: c, rows: rows, columns: columns)
            biasActivation(s, c: c, bias: bias, rows: rows, columns: columns)
        }
    }

    /// Part `part` of `0..<count` cut into `parts` contiguous ranges whose sizes differ by one
    /// at most (none empty while count >= parts), for any count and parts.
    static func share(_ part: Int, of parts: Int, _ count: Int) -> Range<Int> {
        (part * count / parts)..<((part + 1) * count / parts)
    }

    /// How many parts a product is split into: by its size and the machine's cores only.
    static func productParts(multiplyAdds: Int) -> Int {
        min(machineCores, max(1, multiplyAdds / (1 << 18)))
    }

    /// The block `rows` x `columns` of C, by one BLAS call on offset pointers.
    static func sgemmPart(
        _ s: GemmShape, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>,
        rows: Range<Int>, columns: Range<Int>
    ) {
        // op(A) rows i: A[i, :] (lda K) or, transposed, A[:, i] (lda M); likewise op(B) columns j.
        let aStart = s.transposeA ? a + rows.lowerBound : a + rows.lowerBound * s.k
        let bStart = s.transposeB ? b + columns.lowerBound * s.k : b + columns.lowerBound
        cblas_sgemm(
            CblasRowMajor,
            s.transposeA ? CblasTrans : CblasNoTrans,
            s.transposeB ? CblasTrans : CblasNoTrans,
            blasint(rows.count), blasint(columns.count), blasint(s.k),
            s.alpha, aStart, blasint(s.transposeA ? s.m : s.k),
            bStart, blasint(s.transposeB ? s.k : s.n),
            s.beta, c + rows.lowerBound * s.n + columns.lowerBound, blasint(s.n))
    }

    /// The block `rows` x `columns` of C (`s.n` columns wide) plus the bias, through
    /// `s.activation`.
    static func biasActivation(
        _ s: GemmShape, c: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
        rows: Range<Int>, columns: Range<Int>
    ) {
        guard bias != nil || s.activation != .identity else { return }
        // One loop per activation, each with its case fixed: a switch inside the loop jumped
        // through a table for every element and kept it from vectorising.
        @inline(__always) func each(_ f: (Float) -> Float) {
            for r in rows {
                let row = c + r * s.n
                if let bias {
                    for j in columns { row[j] = f(row[j] + bias[j]) }
                } else {
                    for j in columns { row[j] = f(row[j] + 0) }
                }
            }
        }
        switch s.activation {
        case .identity: each { $0 }
        case .relu: each { activate($0, .relu) }
        case .leakyRelu: each { activate($0, .leakyRelu) }
        case .tanh: each { activate($0, .tanh) }
        }
    }

    /// Normal values, element i from `seed` and i alone (`Device.fillNormal`; `fill_normal` in
    /// elementwise.cl draws the same 64-bit values).
    static func fillNormal(
        _ x: UnsafeMutablePointer<Float>, count: Int, deviation: Float, seed: UInt64
    ) {
        parallelChunks(count, minimumChunk: 1 << 13) { range in
            for i in range {
                var z = seed &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                let u1 = Float((z >> 40) + 1) * 0x1p-24
                let u2 = Float((z >> 16) & 0xFF_FFFF) * 0x1p-24
                x[i] =
                    deviation * (-2 * Foundation.log(u1)).squareRoot()
                    * Foundation.cos(2 * Float.pi * u2)
            }
        }
    }

    /// `sign * (target / s)^power`, `s` the standard deviation of the `count` values with
    /// Bessel's correction; `sign` where `s` is 0. Sums in Double: the values are few (a
    /// feedback matrix) and the factor rescales every later step.
    static func deviationScale(
        _ x: UnsafePointer<Float>, count: Int, target: Float, power: Float, sign: Float
    ) -> Float {
        var sum = 0.0
        for i in 0..<count { sum += Double(x[i]) }
        let mean = sum / Double(count)
        var squares = 0.0
        for i in 0..<count {
            let d = Double(x[i]) - mean
            squares += d * d
        }
        let deviation = (squares / Double(count - 1)).squareRoot()
        guard deviation > 0 else { return sign }
        return sign * Float(Foundation.pow(Double(target) / deviation, Double(power)))
    }

    static func channelSums(
        _ x: UnsafePointer<Float>, outer: Int, channels: Int, inner: Int,
        into out: UnsafeMutablePointer<Float>,
        alpha: Float, beta: Float
    ) {
        // Outer row by row, so the inner loops run over contiguous memory and vectorise.
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: max(channels, 1))
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: channels)
        if inner == 1 {
            for o in 0..<outer {
                let row = x + o * channels
                for c in 0..<channels { sums[c] += row[c] }
            }
        } else {
            // Channels in parallel; each run of `inner` entries summed in SIMD lanes.
            parallelChunks(channels, minimumChunk: max(1, (1 << 15) / max(outer * inner, 1))) {
                range in
                for c in range {
                    var sum: Float = 0
                    for o in 0..<outer {
                        sum += Self.sum(x + (o * channels + c) * inner, count: inner)
                    }
                    sums[c] = sum
                }
            }
        }
        for c in 0..<channels { out[c] = alpha * sums[c] + (beta == 0 ? 0 : beta * out[c]) }
    }

    // Reductions in 16 lanes (then the lanes summed): vectorised, unlike a running scalar sum,
    // which the compiler may not reorder.
    typealias Lanes = SIMD16<Float>

    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = Lanes(repeating: 0)
        var i = 0
        while i + Lanes.scalarCount <= count {
            lanes += UnsafeRawPointer(x + i).loadUnaligned(as: Lanes.self)
            i += Lanes.scalarCount
        }
        var total = lanes.sum()
        while i < count {
            total += x[i]
            i += 1
        }
        return total
    }

    /// Σ (x - mean)².
    static func squaredDeviations(_ x: UnsafePointer<Float>, mean: Float, count: Int) -> Float {
        var lanes = Lanes(repeating: 0)
        var i = 0
        let center = Lanes(repeating: mean)
        while i + Lanes.scalarCount <= count {
            let d = UnsafeRawPointer(x + i).loadUnaligned(as: Lanes.self) - center
            lanes += d * d
            i += Lanes.scalarCount
        }
        var total = lanes.sum()
        while i < count {
            total += (x[i] - mean) * (x[i] - mean)
            i += 1
        }
        return total
    }

    /// (Σ g, Σ g·x).
    static func sumAndDot(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int) -> (
        Float, Float
    ) {
        var sums = Lanes(repeating: 0)
        var dots = Lanes(repeating: 0)
        var i = 0
        while i + Lanes.scalarCount <= count {
            let gv = UnsafeRawPointer(g + i).loadUnaligned(as: Lanes.self)
            sums += gv
            dots += gv * UnsafeRawPointer(x + i).loadUnaligned(as: Lanes.self)
            i += Lanes.scalarCount
        }
        var (sum, dot) = (sums.sum(), dots.sum())
        while i < count {
            sum += g[i]
            dot += g[i] * x[i]
            i += 1
        }
        return (sum, dot)
    }

    /// Runs `body` over `0..<count` in chunks on every core: for element-wise work on large
    /// tensors (optimizer steps), where one core leaves the other idle.
    static func parallelChunks(
        _ count: Int, minimumChunk: Int = 1 << 15, _ body: @escaping (Range<Int>) -> Void
    ) {
        let chunks = min(cores, max(1, count / minimumChunk))
        guard chunks > 1 else { return body(0..<count) }
        // The chunks touch disjoint ranges of the caller's buffers.
        CPUWorkers.shared.run(parts: chunks, threads: chunks) { chunk in
            body(share(chunk, of: chunks, count))
        }
    }

    /// im2col of one image into `columns` with row stride `stride` (so several images can sit
    /// side by side): `columns[(c*kh + ky)*kw + kx, oy*Wo + ox]`, zero outside the image.
    static func im2col(
        _ s: ConvShape, image: UnsafePointer<Float>, columns: UnsafeMutablePointer<Float>,
        rowStride: Int
    ) {
        let (ho, wo) = (s.outHeight, s.outWidth)
        var row = 0
        for c in 0..<s.inChannels {
            let plane = image + c * s.height * s.width
            for ky in 0..<s.kernelHeight {
                for kx in 0..<s.kernelWidth {
                    let out = columns + row * rowStride
                    // Output columns whose input column is inside the image: ox in lo..<hi.
                    let lo = min(wo, max(0, (s.padding - kx + s.stride - 1) / s.stride))
                    let hi = max(lo, min(wo, (s.width + s.padding - kx + s.stride - 1) / s.stride))
                    for oy in 0..<ho {
                        let y = oy * s.stride + ky - s.padding
                        let line = out + oy * wo
                        guard y >= 0 && y < s.height else {
                            line.update(repeating: 0, count: wo)
                            continue
                        }
                        let source = plane + y * s.width + kx - s.padding
                        for ox in 0..<lo { line[ox] = 0 }
                        if s.stride == 1 {
                            (line + lo).update(from: source + lo, count: hi - lo)
                        } else {
                            for ox in lo..<hi { line[ox] = source[ox * s.stride] }
                        }
                        for ox in hi..<wo { line[ox] = 0 }
                    }
                    row += 1
                }
            }
        }
    }

    /// Images per chunk: a chunk's patch matrix and product stay within 32 MiB, so one large
    /// product per chunk replaces many small per-image ones.
    static func convChunk(_ s: ConvShape) -> Int {
        let perImage = max(
            1,
            (s.inChannels * s.kernelHeight * s.kernelWidth + s.outChannels) * s.outHeight
                * s.outWidth * 4)
        return max(1, min(s.batch, (32 << 20) / perImage))
    }

    /// The patch matrix of images n0..<n0+count: [patch, count * P], image-major columns.
    static func chunkColumns(
        _ s: ConvShape, input: UnsafePointer<Float>, n0: Int, count: Int,
        into columns: UnsafeMutablePointer<Float>
    ) {
        let positions = s.outHeight * s.outWidth
        let imageSize = s.inChannels * s.height * s.width
        parallelChunks(count, minimumChunk: 1) { images in
            for n in images {
                im2col(
                    s, image: input + (n0 + n) * imageSize, columns: columns + n * positions,
                    rowStride: count * positions)
            }
        }
    }

    /// Calls `body(n0, count, columns, scratch)` for each chunk of images, with the chunk's patch
    /// matrix in `columns` ([patch, count * P]) and room for an O x (count * P) matrix in
    /// `scratch`.
    static func forEachImageChunk(
        _ s: ConvShape, input: UnsafePointer<Float>,
        _ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    ) {
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        let chunk = convChunk(s)
        let columns = UnsafeMutablePointer<Float>.allocate(
            capacity: max(patch * chunk * positions, 1))
        let scratch = UnsafeMutablePointer<Float>.allocate(
            capacity: max(s.outChannels * chunk * positions, 1))
        defer {
            columns.deallocate()
            scratch.deallocate()
        }
        for n0 in stride(from: 0, to: s.batch, by: chunk) {
            let count = min(chunk, s.batch - n0)
            chunkColumns(s, input: input, n0: n0, count: count, into: columns)
            body(n0, count, columns, scratch)
        }
    }

    /// One image at a time on each core: its patch matrix (in cache), one BLAS product straight
    /// into its NCHW output, bias and activation while the output is still in cache. No
    /// scatter pass, and each image's result comes from one product whatever the core count.
    static func conv2d(
        _ s: ConvShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?,
        output: UnsafeMutablePointer<Float>, activation: Activation
    ) {
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        let imageSize = s.inChannels * s.height * s.width
        let outputSize = s.outChannels * positions
        let parts = min(cores, s.batch)
        guard parts > 0 else { return }
        CPUWorkers.shared.run(parts: parts, threads: parts) { part in
            let columns = UnsafeMutablePointer<Float>.allocate(capacity: max(patch * positions, 1))
            defer { columns.deallocate() }
            for n in share(part, of: parts, s.batch) {
                im2col(s, image: input + n * imageSize, columns: columns, rowStride: positions)
                let out = output + n * outputSize
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(s.outChannels),
                    blasint(positions), blasint(patch),
                    1, weight, blasint(patch), columns, blasint(positions), 0, out,
                    blasint(positions))
                guard bias != nil || activation != .identity else { continue }
                for o in 0..<s.outChannels {
                    let row = out + o * positions
                    if let bias {
                        let b = bias[o]
                        for p in 0..<positions { row[p] += b }
                    }
                    if activation != .identity {
                        activate(row, into: row, count: positions, activation)
                    }
                }
            }
        }
    }

    static func conv2dWeightGradient(
        _ s: ConvShape, input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
        weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?,
        beta: Float
    ) {
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        forEachImageChunk(s, input: input) { n0, count, columns, gathered in
            // dZ of the chunk as one O x (count * P) matrix, images side by side.
            parallelChunks(count, minimumChunk: 1) { images in
                for n in images {
                    for o in 0..<s.outChannels {
                        (gathered + o * count * positions + n * positions)
                            .update(
                                from: outputGradient + ((n0 + n) * s.outChannels + o) * positions,
                                count: positions)
                    }
                }
            }
            gemm(
                GemmShape(
                    m: s.outChannels, n: patch, k: count * positions, transposeA: false,
                    transposeB: true, alpha: 1,
                    beta: n0 == 0 ? beta : 1, activation: .identity),
                a: gathered, b: columns, c: weightGradient)
        }
        if s.batch == 0 {
            for i in 0..<(s.outChannels * patch) {
                weightGradient[i] = beta == 0 ? 0 : beta * weightGradient[i]
            }
        }
        if let biasGradient {
            channelSums(
                outputGradient, outer: s.batch, channels: s.outChannels, inner: positions,
                into: biasGradient, alpha: 1, beta: beta)
        }
    }

    static func pool2d(
        _ kind: PoolKind, _ s: PoolShape, input: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>
    ) {
        let (ho, wo) = (s.outHeight, s.outWidth)
        if s.size == 2, !s.ceil || (s.height % 2 == 0 && s.width % 2 == 0) {
            // The training nets' 2x2 windows: two rows at a time, no inner window loops (whole
            // windows only: a ceil-mode edge takes the loop below).
            parallelChunks(s.planes, minimumChunk: max(1, (1 << 14) / max(ho * wo, 1))) { planes in
                for plane in planes {
                    let x = input + plane * s.height * s.width
                    let y = output + plane * ho * wo
                    for oy in 0..<ho {
                        let top = x + 2 * oy * s.width
                        let bottom = top + s.width
                        let out = y + oy * wo
                        for ox in 0..<wo {
                            let (a, b, c, d) = (
                                top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]
                            )
                            if kind == .max {
                                // NaN propagates through max, as in PyTorch.
                                let m = Swift.max(Swift.max(a, b), Swift.max(c, d))
                                out[ox] = (a.isNaN || b.isNaN || c.isNaN || d.isNaN) ? .nan : m
                            } else {
                                out[ox] = (a + b + c + d) * 0.25
                            }
                        }
                    }
                }
            }
            return
        }
        for plane in 0..<s.planes {
            let x = input + plane * s.height * s.width
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var acc: Float = kind == .max ? -.infinity : 0
                    // A ceil-mode window at the edge covers fewer rows and columns.
                    let rows = min(s.size, s.height - oy * s.size)
                    let columns = min(s.size, s.width - ox * s.size)
                    for dy in 0..<rows {
                        for dx in 0..<columns {
                            let v = x[(oy * s.size + dy) * s.width + ox * s.size + dx]
                            // NaN propagates through max, as in PyTorch.
                            acc = kind == .max ? ((v > acc || v.isNaN) ? v : acc) : acc + v
                        }
                    }
                    output[(plane * ho + oy) * wo + ox] =
                        kind == .max ? acc : acc / Float(rows * columns)
                }
            }
        }
    }

    static func localLossRows(
        _ loss: LocalLossKind, batch b: Int, columns n: Int, y: UnsafePointer<Float>,
        yy: UnsafePointer<Float>,
        mask: UnsafeMutablePointer<Float>, dY: UnsafeMutablePointer<Float>,
        rowLosses: UnsafeMutablePointer<Float>
    ) {
        let invB = 1 / Float(b)
        for i in 0..<b {
            let yRow = y + i * n
            let yyRow = yy + i * n
            let mRow = mask + i * n
            let dRow = dY + i * n
            var yyMax = -Float.infinity
            var scale: Float = 0
            for j in 0..<n {
                yyMax = max(yyMax, yyRow[j])
                scale = max(scale, abs(yyRow[j]))
            }
            // Entries within `tolerance` of each other are ties (`LocalLossKind.tieTolerance`).
            let tolerance = LocalLossKind.tieTolerance * scale
            let first = (0..<n).first { yyRow[$0] >= yyMax - tolerance } ?? 0
            let kth: Float
            if case .topK(let k) = loss, k >= 1 {
                kth = kthLargest(yyRow, count: n, k: k)
            } else {
                kth = .infinity
            }
            var m: Float = 0
            for j in 0..<n {
                let selected: Bool
                switch loss {
                case .maxAll: selected = yyRow[j] >= yyMax - tolerance
                case .maxRandom: selected = j == first
                // Fewer than k entries above yyRow[j] + tolerance: the k-th largest is not.
                case .topK: selected = !(kth > yyRow[j] + tolerance)
                }
                mRow[j] = selected ? 1 : 0
                m += mRow[j]
            }
            var yMax = -Float.infinity
            for j in 0..<n { yMax = max(yMax, yRow[j]) }
            var sum: Float = 0
            for j in 0..<n { sum += expf(yRow[j] - yMax) }
            let logSum = logf(sum)
            var rowLoss: Float = 0
            for j in 0..<n {
                let logSoftmax = yRow[j] - yMax - logSum
                rowLoss -= mRow[j] * logSoftmax
                dRow[j] = (m * expf(logSoftmax) - mRow[j]) * invB
            }
            rowLosses[i] = rowLoss * invB
        }
    }

    /// The `k`-th largest of `count` values, counting repeats; -infinity where `k > count`.
    /// One pass holding the `k` largest so far, as the OpenCL kernel does up to its limit; they
    /// live on the stack, since this runs once per row of every local loss.
    static func kthLargest(_ x: UnsafePointer<Float>, count: Int, k: Int) -> Float {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { held in
            held.initialize(repeating: -.infinity)
            for l in 0..<count {
                let v = x[l]
                guard v > held[k - 1] else { continue }
                var t = k - 1
                while t > 0 && held[t - 1] < v {
                    held[t] = held[t - 1]
                    t -= 1
                }
                held[t] = v
            }
            return held[k - 1]
        }
    }

    /// Calls `body(o, start)` for each of a group's `outer` runs of `inner` contiguous elements.
    @inline(__always)
    static func forEachRun(_ layout: GroupLayout, group g: Int, _ body: (Int) -> Void) {
        for o in 0..<layout.outer { body((o * layout.groups + g) * layout.inner) }
    }

    static func normalize(
        _ x: UnsafePointer<Float>, layout: GroupLayout, xhat: UnsafeMutablePointer<Float>,
        rstd: UnsafeMutablePointer<Float>, epsilon: Float
    ) {
        let n = Float(layout.outer * layout.inner)
        let inner = layout.inner
        parallelChunks(
            layout.groups, minimumChunk: max(1, (1 << 15) / max(layout.outer * inner, 1))
        ) { groups in
            for g in groups {
                var mean: Float = 0
                forEachRun(layout, group: g) { start in mean += sum(x + start, count: inner) }
                mean /= n
                var variance: Float = 0
                forEachRun(layout, group: g) { start in
                    variance += squaredDeviations(x + start, mean: mean, count: inner)
                }
                let s = 1 / (variance / n + epsilon).squareRoot()
                forEachRun(layout, group: g) { start in
                    for i in 0..<inner { xhat[start + i] = (x[start + i] - mean) * s }
                }
                rstd[g] = s
            }
        }
    }

    static func normalizeGradient(
        _ dxhat: UnsafePointer<Float>, xhat: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        into dx: UnsafeMutablePointer<Float>, layout: GroupLayout
    ) {
        let n = Float(layout.outer * layout.inner)
        let inner = layout.inner
        parallelChunks(
            layout.groups, minimumChunk: max(1, (1 << 15) / max(layout.outer * inner, 1))
        ) { groups in
            for g in groups {
                var meanG: Float = 0
                var meanGX: Float = 0
                forEachRun(layout, group: g) { start in
                    let (sum, dot) = sumAndDot(dxhat + start, xhat + start, count: inner)
                    meanG += sum
                    meanGX += dot
                }
                meanG /= n
                meanGX /= n
                let s = rstd[g]
                forEachRun(layout, group: g) { start in
                    for i in 0..<inner {
                        dx[start + i] = s * (dxhat[start + i] - meanG - xhat[start + i] * meanGX)
                    }
                }
            }
        }
    }

    /// `rule` on `count` consecutive entries, on one core; `state` in `rule.stateNames` order.
    static func stepEntries(
        _ rule: UpdateRule, parameter p: UnsafeMutablePointer<Float>,
        gradient g: UnsafePointer<Float>, state: [UnsafeMutablePointer<Float>], count: Int
    ) {
        switch rule.kind {
        case .adam, .amsgrad:
            adamEntries(
                rule, parameter: p, gradient: g, m: state[0], v: state[1],
                vMax: state.count > 2 ? state[2] : nil, count: count)
        case .sgd:
            sgdEntries(rule, parameter: p, gradient: g, momentum: state.first, count: count)
        }
    }

    /// Adam / AMSGrad on `count` consecutive entries: the rule optimizer.cl and gemm.cl's
    /// update epilogue apply (PyTorch's), on one core.
    private static func adamEntries(
        _ s: UpdateRule, parameter p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        vMax: UnsafeMutablePointer<Float>?, count: Int
    ) {
        // This step streams every parameter and is memory-bound once it is vectorised.
        let (stepSize, bc2Sqrt, eps, decay) = (
            s.stepSize, s.biasCorrection2Sqrt, s.epsilon, s.weightDecay
        )
        let (b1, b2, c1, c2) = (s.beta1, s.beta2, 1 - s.beta1, 1 - s.beta2)
        // 16 lanes at a time with explicit SIMD (the compiler does not vectorise the scalar
        // loop: the pointers may alias), then the tail one by one.
        typealias V = SIMD16<Float>
        var i = 0
        while i + 16 <= count {
            let load = { (pointer: UnsafePointer<Float>) in
                UnsafeRawPointer(pointer + i).loadUnaligned(as: V.self)
            }
            let pv = load(p)
            let grad = load(g) + decay * pv
            let mi = b1 * load(m) + c1 * grad
            let vi = b2 * load(v) + c2 * grad * grad
            var second = vi
            if let vMax {
                second = pointwiseMax(load(vMax), vi)
                UnsafeMutableRawPointer(vMax + i).storeBytes(of: second, as: V.self)
            }
            UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: V.self)
            UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: V.self)
            UnsafeMutableRawPointer(p + i).storeBytes(
                of: pv - stepSize * mi / (second.squareRoot() / bc2Sqrt + eps), as: V.self)
            i += 16
        }
        while i < count {
            let grad = g[i] + decay * p[i]
            let mi = b1 * m[i] + c1 * grad
            let vi = b2 * v[i] + c2 * grad * grad
            var second = vi
            if let vMax {
                second = max(vMax[i], vi)
                vMax[i] = second
            }
            m[i] = mi
            v[i] = vi
            p[i] -= stepSize * mi / (second.squareRoot() / bc2Sqrt + eps)
            i += 1
        }
    }

    /// SGD on `count` consecutive entries, on one core.
    private static func sgdEntries(
        _ s: UpdateRule, parameter p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>,
        momentum buffer: UnsafeMutablePointer<Float>?, count: Int
    ) {
        let (decay, rate, momentum, keep) = (
            s.weightDecay, s.learningRate, s.momentum, 1 - s.dampening
        )
        let (first, nesterov) = (s.firstStep, s.nesterov)
        let buffer = momentum != 0 ? buffer : nil
        // 16 lanes at a time, as Adam's (the same operations entry by entry, so the same
        // numbers as the scalar tail), then the tail one by one.
        typealias V = SIMD16<Float>
        var i = 0
        while i + 16 <= count {
            let load = { (pointer: UnsafePointer<Float>) in
                UnsafeRawPointer(pointer + i).loadUnaligned(as: V.self)
            }
            let pv = load(p)
            var grad = load(g) + decay * pv
            if let buffer {
                let b = first ? grad : momentum * load(buffer) + keep * grad
                UnsafeMutableRawPointer(buffer + i).storeBytes(of: b, as: V.self)
                grad = nesterov ? grad + momentum * b : b
            }
            UnsafeMutableRawPointer(p + i).storeBytes(of: pv - rate * grad, as: V.self)
            i += 16
        }
        while i < count {
            var grad = g[i] + decay * p[i]
            if let buffer {
                buffer[i] = first ? grad : momentum * buffer[i] + keep * grad
                grad = nesterov ? grad + momentum * buffer[i] : buffer[i]
            }
            p[i] -= rate * grad
            i += 1
        }
    }

    /// Operands of the fused weight update on the CPU: `rows` rows of A (rows x M) and B (rows x
    /// N).
    struct UpdatePair {
        let a: UnsafePointer<Float>, b: UnsafePointer<Float>, rows: Int
    }

    /// The CPU twin of gemm.cl's `gemm_update_*`: W [m, n] stepped with G = Σ Aᵀ B. OpenBLAS
    /// has no epilogue, so each core forms G for its share of W's rows into a scratch buffer
    /// and steps those rows right away, while G is still in its caches. One share per core:
    /// smaller panels (64 rows, 256 KB) measured slower, since OpenBLAS packs all of B again
    /// for every call. `step(range of W's entries, G for them)` applies the optimizer.
    static func updateWeights(
        m: Int, n: Int, pairs: [UpdatePair],
        step: @escaping @Sendable (Range<Int>, UnsafePointer<Float>) -> Void
    ) {
        guard m > 0, n > 0 else { return }
        // Split like `gemm`, so the shares match its rows.
        let parts = min(m, productParts(multiplyAdds: m * n * pairs.reduce(0) { $0 + $1.rows }))
        CPUWorkers.shared.run(parts: parts, threads: cores) { part in
            // Each part takes a contiguous share of W's rows.
            let rows = share(part, of: parts, m)
            guard !rows.isEmpty else { return }
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: rows.count * n)
            defer { scratch.deallocate() }
            var beta: Float = 0
            for pair in pairs where pair.rows > 0 {
                cblas_sgemm(
                    CblasRowMajor, CblasTrans, CblasNoTrans, blasint(rows.count), blasint(n),
                    blasint(pair.rows),
                    1, pair.a + rows.lowerBound, blasint(m), pair.b, blasint(n), beta, scratch,
                    blasint(n))
                beta = 1
            }
            if beta == 0 { scratch.update(repeating: 0, count: rows.count * n) }
            step((rows.lowerBound * n)..<(rows.upperBound * n), scratch)
        }
    }
}
