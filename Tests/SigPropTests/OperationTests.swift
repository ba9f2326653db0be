import Foundation
import Testing

@testable import SigProp

/// Every operation, on every backend, against references that do not use the CPU fallback:
/// plain loops in double, finite differences, and (OpenCLvs CPU) the shared self-check table.
@Suite struct OperationTests {
    static let gemmShapes: [(Int, Int, Int)] = [
        (1, 1, 1), (7, 7, 7), (129, 7, 13), (1, 129, 1000), (33, 17, 129),
    ]

    @Test(arguments: TestBackend.available)
    func gemmMatchesPlainLoopsInEveryTranspose(_ backend: TestBackend) throws {
        let device = try backend.device()
        for (m, n, k) in Self.gemmShapes {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = random(m * k, seed: 1)
                let b = random(k * n, seed: 2)
                let c0 = random(m * n, seed: 3)
                let bias = random(n, seed: 4)
                let c = try device.tensor(c0, shape: [m, n])
                try device.gemm(
                    try device.tensor(a, shape: ta ? [k, m] : [m, k]), transposeA: ta,
                    try device.tensor(b, shape: tb ? [n, k] : [k, n]), transposeB: tb,
                    into: c, alpha: 0.5, beta: -2, bias: try device.tensor(bias, shape: [n]),
                    activation: .leakyRelu)
                let product = naiveProduct(a, b, m: m, n: n, k: k, transposeA: ta, transposeB: tb)
                let expected = (0..<(m * n)).map { i -> Float in
                    let v = 0.5 * product[i] - 2 * c0[i] + bias[i % n]
                    return v > 0 ? v : 0.01 * v
                }
                expectClose(
                    try device.read(c), expected, absolute: 1e-4,
                    "gemm \(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N")")
            }
        }
    }

    @Test(arguments: TestBackend.available)
    func gemmWithZeroBetaIgnoresNaNInTheOutput(_ backend: TestBackend) throws {
        let device = try backend.device()
        let c = try device.tensor([Float](repeating: .nan, count: 4), shape: [2, 2])
        try device.gemm(
            try device.tensor([1, 0, 0, 1], shape: [2, 2]),
            try device.tensor([1, 2, 3, 4], shape: [2, 2]), into: c)
        #expect(try device.read(c) == [1, 2, 3, 4])
    }

    @Test(arguments: TestBackend.available)
    func convolutionMatchesDirectLoops(_ backend: TestBackend) throws {
        let device = try backend.device()
        let shapes = [
            ConvShape(
                batch: 1, inChannels: 1, height: 1, width: 1, outChannels: 1, kernelHeight: 1,
                kernelWidth: 1, stride: 1, padding: 0),
            ConvShape(
                batch: 2, inChannels: 3, height: 7, width: 5, outChannels: 4, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
            ConvShape(
                batch: 1, inChannels: 2, height: 9, width: 8, outChannels: 3, kernelHeight: 3,
                kernelWidth: 2, stride: 2, padding: 0),
            // At least a tile of output channels (8 rows on AVX-512, 6 on AVX2): conv_direct on
            // CPU drivers, with channels, positions and padded rows that fill no tile evenly.
            ConvShape(
                batch: 1, inChannels: 1, height: 1, width: 1, outChannels: 8, kernelHeight: 1,
                kernelWidth: 1, stride: 1, padding: 0),
            ConvShape(
                batch: 3, inChannels: 2, height: 7, width: 29, outChannels: 9, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
            ConvShape(
                batch: 2, inChannels: 5, height: 13, width: 6, outChannels: 17, kernelHeight: 5,
                kernelWidth: 5, stride: 1, padding: 2),
            ConvShape(
                batch: 1, inChannels: 3, height: 4, width: 9, outChannels: 8, kernelHeight: 3,
                kernelWidth: 2, stride: 1, padding: 0),
            ConvShape(
                batch: 2, inChannels: 4, height: 9, width: 9, outChannels: 13, kernelHeight: 3,
                kernelWidth: 3, stride: 2, padding: 1),
        ]
        for (index, s) in shapes.enumerated() {
            let activation = Activation.allCases[index % Activation.allCases.count]
            let x = random(s.batch * s.inChannels * s.height * s.width, seed: 5)
            let w = random(s.outChannels * s.inChannels * s.kernelHeight * s.kernelWidth, seed: 6)
            let b = random(s.outChannels, seed: 7)
            let y = try device.zeros([s.batch, s.outChannels, s.outHeight, s.outWidth])
            try device.conv2d(
                try device.tensor(x, shape: [s.batch, s.inChannels, s.height, s.width]),
                weight: try device.tensor(
                    w, shape: [s.outChannels, s.inChannels, s.kernelHeight, s.kernelWidth]),
                bias: try device.tensor(b, shape: [s.outChannels]), into: y, stride: s.stride,
                padding: s.padding,
                activation: activation)
            var expected: [Float] = []
            for n in 0..<s.batch {
                for o in 0..<s.outChannels {
                    for oy in 0..<s.outHeight {
                        for ox in 0..<s.outWidth {
                            var sum = Double(b[o])
                            for c in 0..<s.inChannels {
                                for ky in 0..<s.kernelHeight {
                                    for kx in 0..<s.kernelWidth {
                                        let iy = oy * s.stride + ky - s.padding
                                        let ix = ox * s.stride + kx - s.padding
                                        guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else {
                                            continue
                                        }
                                        sum +=
                                            Double(
                                                w[
                                                    ((o * s.inChannels + c) * s.kernelHeight + ky)
                                                        * s.kernelWidth + kx])
                                            * Double(
                                                x[
                                                    ((n * s.inChannels + c) * s.height + iy)
                                                        * s.width + ix])
                                    }
                                }
                            }
                            expected.append(CPUKernels.activate(Float(sum), activation))
                        }
                    }
                }
            }
            expectClose(try device.read(y), expected, "conv2d \(s) \(activation)")
        }
    }

    /// The weight and bias gradients are the derivatives of L = sum(G ⊙ conv(x; W, b)); with
    /// 5 output channels (im2col on every OpenCL device) and 9 (the direct kernels on CPU drivers).
    @Test(arguments: TestBackend.available, [5, 9])
    func convolutionGradientsMatchFiniteDifferences(_ backend: TestBackend, outChannels: Int) throws
    {
        let device = try backend.device()
        let s = ConvShape(
            batch: 2, inChannels: 3, height: 7, width: 6, outChannels: outChannels, kernelHeight: 3,
            kernelWidth: 3, stride: 1, padding: 1)
        let xShape = [s.batch, s.inChannels, s.height, s.width]
        let wShape = [s.outChannels, s.inChannels, 3, 3]
        let yShape = [s.batch, s.outChannels, s.outHeight, s.outWidth]
        let x = try device.tensor(random(xShape.reduce(1, *), seed: 8), shape: xShape)
        let g = random(yShape.reduce(1, *), seed: 9)
        let w0 = random(wShape.reduce(1, *), seed: 10)
        let b0 = random(s.outChannels, seed: 11)
        func loss(_ w: [Float], _ b: [Float]) throws -> Double {
            let y = try device.zeros(yShape)
            try device.conv2d(
                x, weight: try device.tensor(w, shape: wShape),
                bias: try device.tensor(b, shape: [s.outChannels]), into: y, padding: 1)
            return zip(try device.read(y), g).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        let dw = try device.zeros(wShape)
        let db = try device.zeros([s.outChannels])
        try device.conv2dWeightGradient(
            x, outputGradient: try device.tensor(g, shape: yShape), into: dw, biasGradient: db,
            padding: 1)
        let (analyticW, analyticB) = (try device.read(dw), try device.read(db))
        let step: Float = 0.01
        for index in [0, 13, 77, wShape.reduce(1, *) - 1] {
            var plus = w0
            var minus = w0
            plus[index] += step
            minus[index] -= step
            let numeric = (try loss(plus, b0) - loss(minus, b0)) / Double(2 * step)
            #expect(
                abs(numeric - Double(analyticW[index])) <= 2e-2 + 1e-2 * abs(numeric),
                "dW[\(index)]: \(analyticW[index]) vs \(numeric)")
        }
        for index in 0..<s.outChannels {
            var plus = b0
            var minus = b0
            plus[index] += step
            minus[index] -= step
            let numeric = (try loss(w0, plus) - loss(w0, minus)) / Double(2 * step)
            #expect(
                abs(numeric - Double(analyticB[index])) <= 2e-2 + 1e-2 * abs(numeric),
                "db[\(index)]: \(analyticB[index]) vs \(numeric)")
        }
    }

    /// The training layer's shape over a batch the OpenCL convolution splits into chunks (8 MB
    /// of scratch and output at a time on CPU drivers): forward and weight gradient (beta 0.5,
    /// then 1 from the second chunk on) against the CPU fallback.
    @Test func convolutionInChunksMatchesTheCPUFallback() throws {
        guard TestBackend.available.contains(.opencl) else { return }
        let (opencl, cpu) = (try TestBackend.opencl.device(), try TestBackend.cpu.device())
        let s = ConvShape(
            batch: 45, inChannels: 32, height: 28, width: 28, outChannels: 64, kernelHeight: 3,
            kernelWidth: 3, stride: 1, padding: 1)
        let xShape = [s.batch, s.inChannels, s.height, s.width]
        let wShape = [s.outChannels, s.inChannels, 3, 3]
        let yShape = [s.batch, s.outChannels, s.outHeight, s.outWidth]
        let (x, w, b, g, dw0) = (
            random(xShape.reduce(1, *), seed: 30), random(wShape.reduce(1, *), seed: 31),
            random(s.outChannels, seed: 32),
            random(yShape.reduce(1, *), seed: 33), random(wShape.reduce(1, *), seed: 34)
        )
        var results: [[[Float]]] = []
        for device in [opencl, cpu] {
            let input = try device.tensor(x, shape: xShape)
            let y = try device.zeros(yShape)
            try device.conv2d(
                input, weight: try device.tensor(w, shape: wShape),
                bias: try device.tensor(b, shape: [s.outChannels]), into: y,
                padding: 1, activation: .relu)
            let dw = try device.tensor(dw0, shape: wShape)
            let db = try device.zeros([s.outChannels])
            try device.conv2dWeightGradient(
                input, outputGradient: try device.tensor(g, shape: yShape), into: dw,
                biasGradient: db, beta: 0.5, padding: 1)
            results.append([try device.read(y), try device.read(dw), try device.read(db)])
        }
        expectClose(results[0][0], results[1][0], absolute: 1e-4, relative: 1e-4, "conv2d forward")
        // Sums of 45 x 784 products of values in [-1, 1]: absolute errors near 1e-3 are rounding.
        expectClose(
            results[0][1], results[1][1], absolute: 5e-3, relative: 1e-4, "conv2d weight gradient")
        expectClose(
            results[0][2], results[1][2], absolute: 5e-3, relative: 1e-4, "conv2d bias gradient")
    }

    /// Layers take their outputs uninitialised (no zero fill first, which is a launch on a GPU),
    /// so each operation they use must write its whole output: outputs filled with NaN first
    /// hold no NaN after.
    @Test(arguments: TestBackend.available)
    func layerOperationsWriteTheirWholeOutput(_ backend: TestBackend) throws {
        let device = try backend.device()
        func nan(_ shape: [Int]) throws -> Tensor {
            try device.tensor([Float](repeating: .nan, count: shape.reduce(1, *)), shape: shape)
        }
        func values(_ shape: [Int], seed: UInt64) throws -> Tensor {
            try device.tensor(random(shape.reduce(1, *), seed: seed), shape: shape)
        }
        func expectWhole(_ tensor: Tensor, _ what: String) throws {
            #expect(
                !(try device.read(tensor)).contains { $0.isNaN }, "\(what) left entries unwritten")
        }
        // Dense and conv products with beta 0, with and without a norm after (no activation).
        let dense = try nan([7, 9])
        try device.gemm(
            try values([7, 13], seed: 40), try values([9, 13], seed: 41), transposeB: true,
            into: dense, bias: try values([9], seed: 42))
        try expectWhole(dense, "gemm")
        for outChannels in [5, 9] {  // im2col, and the direct kernels on CPU drivers
            for activation in [Activation.identity, .relu] {
                let conv = try nan([3, outChannels, 7, 29])
                try device.conv2d(
                    try values([3, 2, 7, 29], seed: 43),
                    weight: try values([outChannels, 2, 3, 3], seed: 44),
                    bias: try values([outChannels], seed: 45),
                    into: conv, padding: 1, activation: activation)
                try expectWhole(conv, "conv2d to \(outChannels) channels, \(activation)")
            }
        }
        let x = try values([2, 3, 7, 9], seed: 46)
        let pooled = try nan([2, 3, 3, 4])
        try device.pool2d(.max, x, into: pooled)
        try expectWhole(pooled, "pool2d")
        let product = try nan([2, 3, 7, 9])
        try device.multiply(x, try values([2, 3, 7, 9], seed: 47), into: product)
        try expectWhole(product, "multiply")
        let layout = GroupLayout(outer: 1, groups: 6, inner: 63)
        let (xhat, rstd) = (try nan([2, 3, 7, 9]), try nan([6]))
        try device.normalize(x, layout: layout, into: xhat, rstd: rstd)
        try expectWhole(xhat, "normalize xhat")
        try expectWhole(rstd, "normalize rstd")
        let dz = try nan([2, 3, 7, 9])
        try device.activationGradient(
            .relu, output: x, gradient: try values([2, 3, 7, 9], seed: 48), into: dz)
        try expectWhole(dz, "activationGradient")
        let (mask, dY, rows) = (try nan([5, 4]), try nan([5, 4]), try nan([5]))
        try device.localLossRows(
            .maxAll, y: try values([5, 4], seed: 49), yy: try values([5, 4], seed: 50), mask: mask,
            dY: dY, rowLosses: rows)
        for (tensor, name) in [(mask, "mask"), (dY, "dY"), (rows, "row losses")] {
            try expectWhole(tensor, "localLossRows \(name)")
        }
        let factor = try nan([1])
        try device.deviationScale(of: try values([300], seed: 51), target: 1, into: factor)
        try expectWhole(factor, "deviationScale")
        let noise = try nan([7, 129])
        try device.fillNormal(noise, deviation: 1, seed: 52)
        try expectWhole(noise, "fillNormal")
    }

    @Test(arguments: TestBackend.available)
    func activationGradientMatchesFiniteDifferences(_ backend: TestBackend) throws {
        let device = try backend.device()
        // Points away from the kinks at 0, where the one-sided derivatives differ.
        let z = random(64, seed: 12).map { $0 >= 0 ? $0 + 0.1 : $0 - 0.1 }
        for activation in Activation.allCases {
            let zt = try device.tensor(z, shape: [64])
            let a = try device.zeros([64])
            let g = try device.tensor([Float](repeating: 1, count: 64), shape: [64])
            try device.activate(activation, zt, into: a)
            try device.activationGradient(activation, output: a, gradient: g, into: g)
            let analytic = try device.read(g)
            let numeric = z.map { v -> Float in
                let h: Float = 1e-3
                return
                    (CPUKernels.activate(v + h, activation) - CPUKernels.activate(v - h, activation))
                    / (2 * h)
            }
            expectClose(
                analytic, numeric, absolute: 1e-3, relative: 1e-3, "\(activation) derivative")
        }
    }

    /// The gradient through normalisation and a per-channel affine is the derivative of
    /// L = sum(G ⊙ (normalize(x) * scale)), for layer, instance and batch layouts.
    @Test(arguments: TestBackend.available)
    func normalisationGradientMatchesFiniteDifferences(_ backend: TestBackend) throws {
        let device = try backend.device()
        let cases: [(String, [Int], GroupLayout)] = [
            ("layer", [1, 7], GroupLayout(outer: 1, groups: 1, inner: 7)),
            ("layer", [3, 129], GroupLayout(outer: 1, groups: 3, inner: 129)),
            ("instance", [2, 3, 3, 3], GroupLayout(outer: 1, groups: 6, inner: 9)),
            ("batch", [4, 3, 2, 2], GroupLayout(outer: 4, groups: 3, inner: 4)),
            ("batch", [7, 5], GroupLayout(outer: 7, groups: 5, inner: 1)),
        ]
        for (label, shape, layout) in cases {
            let count = shape.reduce(1, *)
            let channels = shape[1]
            let inner = shape.count == 4 ? shape[2] * shape[3] : 1
            let x0 = random(count, seed: 40, in: -2...2)
            let g = random(count, seed: 41)
            let scale = random(channels, seed: 42)
            let scaleTensor = try device.tensor(scale, shape: [channels])
            func forward(_ x: [Float]) throws -> (xhat: Tensor, rstd: Tensor, y: Tensor) {
                let xhat = try device.zeros(shape)
                let rstd = try device.zeros([layout.groups])
                let y = try device.zeros(shape)
                try device.normalize(
                    try device.tensor(x, shape: shape), layout: layout, into: xhat, rstd: rstd)
                try device.scaleShiftChannels(xhat, scale: scaleTensor, inner: inner, into: y)
                return (xhat, rstd, y)
            }
            func loss(_ x: [Float]) throws -> Double {
                zip(try device.read(try forward(x).y), g).reduce(0) {
                    $0 + Double($1.0) * Double($1.1)
                }
            }
            let (xhat, rstd, _) = try forward(x0)
            let dxhat = try device.zeros(shape)
            try device.scaleShiftChannels(
                try device.tensor(g, shape: shape), scale: scaleTensor, inner: inner, into: dxhat)
            try device.normalizeGradient(dxhat, xhat: xhat, rstd: rstd, layout: layout, into: dxhat)
            let analytic = try device.read(dxhat)
            for index in Set([0, count / 2, count - 1]) {
                var plus = x0
                var minus = x0
                plus[index] += 1e-2
                minus[index] -= 1e-2
                let numeric = (try loss(plus) - loss(minus)) / 2e-2
                #expect(
                    abs(numeric - Double(analytic[index])) <= 2e-3 + 2e-2 * abs(numeric),
                    "\(label) \(shape) dx[\(index)]: \(analytic[index]) vs \(numeric)")
            }
        }
    }

    /// 2x2 and 3x3 windows over 7x5 planes, whose edges either size leaves partial: dropped
    /// (floor), or pooled over the entries they cover (ceil: an average divides by their count).
    @Test(arguments: TestBackend.available)
    func poolingMatchesPlainLoops(_ backend: TestBackend) throws {
        let device = try backend.device()
        let x = random(2 * 7 * 5, seed: 13)
        for kind in PoolKind.allCases {
            for (size, ceil) in [(2, false), (2, true), (3, false), (3, true)] {
                let (ho, wo) =
                    ceil ? ((7 + size - 1) / size, (5 + size - 1) / size) : (7 / size, 5 / size)
                let y = try device.zeros([1, 2, ho, wo])
                try device.pool2d(
                    kind, try device.tensor(x, shape: [1, 2, 7, 5]), size: size, ceil: ceil,
                    into: y)
                var expected: [Float] = []
                for plane in 0..<2 {
                    for oy in 0..<ho {
                        for ox in 0..<wo {
                            var window: [Float] = []
                            for dy in 0..<size where oy * size + dy < 7 {
                                for dx in 0..<size where ox * size + dx < 5 {
                                    window.append(
                                        x[plane * 35 + (oy * size + dy) * 5 + ox * size + dx])
                                }
                            }
                            expected.append(
                                kind == .max
                                    ? window.max()! : window.reduce(0, +) / Float(window.count))
                        }
                    }
                }
                expectClose(
                    try device.read(y), expected, "pool \(kind) \(size)x\(size) ceil \(ceil)")
            }
        }
    }

    @Test(arguments: TestBackend.available)
    func channelSumsAndAxpby(_ backend: TestBackend) throws {
        let device = try backend.device()
        let x = random(7 * 129, seed: 14)
        let out = try device.tensor([Float](repeating: 1, count: 129), shape: [129])
        try device.channelSums(
            try device.tensor(x, shape: [7, 129]), channels: 129, into: out, alpha: 2, beta: 3)
        let expected = (0..<129).map { j in
            2 * (0..<7).reduce(Float(0)) { $0 + x[$1 * 129 + j] } + 3
        }
        expectClose(try device.read(out), expected, "column sums")
        // NCHW [3, 7, 41]: per-channel sums over batch and positions.
        let perChannel = try device.zeros([7])
        try device.channelSums(
            try device.tensor(Array(x.prefix(861)), shape: [3, 7, 41]), channels: 7, inner: 41,
            into: perChannel)
        let expectedChannels = (0..<7).map { c in
            (0..<3).reduce(Float(0)) { sum, n in
                sum + x[(n * 7 + c) * 41..<(n * 7 + c + 1) * 41].reduce(0, +)
            }
        }
        expectClose(try device.read(perChannel), expectedChannels, absolute: 1e-4, "channel sums")
        let y = try device.tensor(x, shape: [7, 129])
        try device.axpby(alpha: -1, y, beta: 2, y)
        expectClose(try device.read(y), x, "axpby")
    }

    /// `scaleShiftChannels` against plain loops: per feature of a dense batch, per channel of
    /// NCHW activations, and one whole tensor (split over the cores), in place.
    @Test(arguments: TestBackend.available)
    func scaleShiftChannelsMatchesPlainLoops(_ backend: TestBackend) throws {
        let device = try backend.device()
        for (outer, channels, inner) in [(7, 129, 1), (3, 5, 49), (1, 1, 100_003)] {
            let count = outer * channels * inner
            let x = random(count, seed: 60)
            let (scale, shift) = (random(channels, seed: 61), random(channels, seed: 62))
            let tensor = try device.tensor(x, shape: [count])
            try device.scaleShiftChannels(
                tensor, scale: try device.tensor(scale, shape: [channels]),
                shift: try device.tensor(shift, shape: [channels]), inner: inner, into: tensor)
            let expected = (0..<count).map { e in
                let c = (e / inner) % channels
                return x[e] * scale[c] + shift[c]
            }
            expectClose(
                try device.read(tensor), expected,
                "scaleShiftChannels \(outer)x\(channels)x\(inner)")
        }
    }

    /// `fillNormal`: mean, deviation and the share beyond two deviations of 100,003 draws
    /// (each within about four standard errors); the same seed gives the same values, another
    /// seed others; OpenCL draws what the CPU fallback draws, up to the last bits of log and cos.
    @Test(arguments: TestBackend.available)
    func fillNormalDrawsNormalValues(_ backend: TestBackend) throws {
        let device = try backend.device()
        let count = 100_003
        func draw(_ device: Device, seed: UInt64) throws -> [Float] {
            let x = try device.zeros([count])
            try device.fillNormal(x, deviation: 0.5, seed: seed)
            return try device.read(x)
        }
        let x = try draw(device, seed: 42)
        let mean = x.reduce(0.0) { $0 + Double($1) } / Double(count)
        let deviation =
            (x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count))
            .squareRoot()
        let beyond = Double(x.filter { abs($0) > 1 }.count) / Double(count)
        #expect(abs(mean) < 0.007, "mean \(mean)")
        #expect(abs(deviation - 0.5) < 0.005, "deviation \(deviation)")
        #expect(abs(beyond - 0.0455) < 0.003, "share beyond 2 deviations \(beyond)")
        #expect(try draw(device, seed: 42) == x)
        #expect(try draw(device, seed: 43) != x)
        let cpu = try draw(try TestBackend.cpu.device(), seed: 42)
        expectClose(x, cpu, absolute: 1e-5, relative: 1e-5, "fillNormal against the CPU")
    }

    /// `deviationScale` against the deviation computed here in Double (Bessel's correction,
    /// as torch.std): sizes around the vector width and the work-group of 128, a power and a
    /// sign, an offset mean, and a constant tensor (factor = sign). The OpenCL device posing as
    /// a GPU runs the work-group kernel.
    @Test(arguments: TestBackend.available + [nil])
    func deviationScaleMatchesTheDeviation(_ backend: TestBackend?) throws {
        guard let device = try TestBackend.device(backend) else { return }
        for count in [2, 7, 9, 128, 129, 1000, 7841] {
            let x = random(count, seed: UInt64(count)).map { $0 * 0.3 + 2 }
            let mean = x.reduce(0.0) { $0 + Double($1) } / Double(count)
            let deviation =
                (x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
                / Double(count - 1)).squareRoot()
            let factor = try device.zeros([1])
            try device.deviationScale(
                of: try device.tensor(x, shape: [count]), target: 0.05, power: 0.5, sign: -1,
                into: factor)
            let expected = -Foundation.pow(0.05 / deviation, 0.5)
            expectClose(
                try device.read(factor), [Float(expected)], absolute: 0, relative: 1e-4,
                "deviation scale of \(count) values")
        }
        let constant = try device.tensor([Float](repeating: 3, count: 300), shape: [300])
        let factor = try device.zeros([1])
        try device.deviationScale(of: constant, target: 1, sign: -1, into: factor)
        #expect(try device.read(factor) == [-1])
        #expect(throws: SigPropError.self) {
            try device.deviationScale(of: try device.zeros([1]), target: 1, into: factor)
        }
    }

    /// GPUs reduce in work-groups (`channel_sums_grouped`, `normalize_groups*_grouped`): the
    /// OpenCL device posing as a GPU runs those kernels here, against plain sums and the CPU
    /// fallback, on shapes around the group of 128 (layer, instance and batch norm layouts).
    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func groupedReductionsMatchTheCPUFallback() throws {
        let gpu = try #require(try TestBackend.posingAsGPU())
        let cpu = try TestBackend.cpu.device()
        for (outer, channels, inner) in [
            (1, 1, 2), (3, 7, 41), (2, 5, 128), (1, 3, 129), (4, 2, 1000), (9, 129, 7),
            (1, 129, 1024), (7, 3, 1), (1023, 3, 1), (1024, 10, 1), (3001, 1, 1),
        ] {
            let what = "\(outer)x\(channels)x\(inner)"
            let x = random(outer * channels * inner, seed: UInt64(outer * 100 + inner))
            let out = try gpu.tensor([Float](repeating: 1, count: channels), shape: [channels])
            try gpu.channelSums(
                try gpu.tensor(x, shape: [outer, channels, inner]), channels: channels,
                inner: inner, into: out, alpha: 2, beta: -1)
            let expected = (0..<channels).map { c in
                2
                    * (0..<outer).reduce(Float(0)) { sum, n in
                        sum
                            + x[(n * channels + c) * inner..<(n * channels + c + 1) * inner].reduce(
                                0, +)
                    } - 1
            }
            expectClose(
                try gpu.read(out), expected, absolute: 1e-4, relative: 1e-5,
                "grouped channel sums \(what)")

            let layout = GroupLayout(outer: outer, groups: channels, inner: inner)
            let dxhat = random(x.count, seed: 77)
            var results: [[[Float]]] = []
            for device in [gpu, cpu] {
                let xhat = try device.zeros([x.count])
                let rstd = try device.zeros([channels])
                let dx = try device.zeros([x.count])
                try device.normalize(
                    try device.tensor(x, shape: [x.count]), layout: layout, into: xhat, rstd: rstd)
                try device.normalizeGradient(
                    try device.tensor(dxhat, shape: [x.count]), xhat: xhat, rstd: rstd,
                    layout: layout, into: dx)
                results.append([try device.read(xhat), try device.read(rstd), try device.read(dx)])
            }
            for (name, index) in [("xhat", 0), ("rstd", 1), ("dx", 2)] {
                expectClose(
                    results[0][index], results[1][index], absolute: 1e-4, relative: 1e-4,
                    "grouped norm \(name) \(what)")
            }
        }
    }

    /// PyTorch's Adam and AMSGrad and SGD (momentum, Nesterov, weight decay), in double.
    @Test(arguments: TestBackend.available)
    func optimizerStepsMatchPyTorchFormulas(_ backend: TestBackend) throws {
        let device = try backend.device()
        let count = 129
        let p0 = random(count, seed: 15)
        let grads = (1...3).map { random(count, seed: 16 + UInt64($0)) }
        for amsgrad in [false, true] {
            let p = try device.tensor(p0, shape: [count])
            let m = try device.zeros([count])
            let v = try device.zeros([count])
            let vMax = try device.zeros([count])
            var (rp, rm, rv, rMax) = (
                p0.map(Double.init), [Double](repeating: 0, count: count),
                [Double](repeating: 0, count: count), [Double](repeating: 0, count: count)
            )
            for (t, grad) in grads.enumerated() {
                let rule = UpdateRule(
                    amsgrad ? .amsgrad : .adam, learningRate: 1e-2, weightDecay: 0.1, step: t + 1)
                try device.step(
                    p, gradient: try device.tensor(grad, shape: [count]), rule: rule,
                    state: [m, v] + (amsgrad ? [vMax] : []))
                for i in 0..<count {
                    let g = Double(grad[i]) + 0.1 * rp[i]
                    rm[i] = 0.9 * rm[i] + 0.1 * g
                    rv[i] = 0.999 * rv[i] + 0.001 * g * g
                    rMax[i] = max(rMax[i], rv[i])
                    let bc1 = 1 - pow(0.9, Double(t + 1))
                    let bc2 = 1 - pow(0.999, Double(t + 1))
                    rp[i] -=
                        1e-2 / bc1 * rm[i]
                        / ((amsgrad ? rMax[i] : rv[i]).squareRoot() / bc2.squareRoot() + 1e-8)
                }
            }
            expectClose(
                try device.read(p), rp.map(Float.init), absolute: 1e-5, relative: 1e-4,
                amsgrad ? "amsgrad" : "adam")
        }
        let p = try device.tensor(p0, shape: [count])
        let buffer = try device.zeros([count])
        var (rp, rb) = (p0.map(Double.init), [Double](repeating: 0, count: count))
        for (t, grad) in grads.enumerated() {
            try device.step(
                p, gradient: try device.tensor(grad, shape: [count]),
                rule: UpdateRule(
                    .sgd, learningRate: 0.1, weightDecay: 0.01, momentum: 0.9, dampening: 0.1,
                    nesterov: true, step: t + 1),
                state: [buffer])
            for i in 0..<count {
                let g = Double(grad[i]) + 0.01 * rp[i]
                rb[i] = t == 0 ? g : 0.9 * rb[i] + 0.9 * g
                rp[i] -= 0.1 * (g + 0.9 * rb[i])
            }
        }
        expectClose(try device.read(p), rp.map(Float.init), "sgd")
    }

    @Test(arguments: TestBackend.available)
    func localLossGradientsMatchFiniteDifferences(_ backend: TestBackend) throws {
        let device = try backend.device()
        for (batch, width) in [(1, 3), (7, 5), (12, 9)] {
            let h0 = random(batch * width, seed: 20)
            let t0v = random(batch * width, seed: 21)
            let labels = (0..<batch).map { $0 % 3 }
            let targets = labels.flatMap { label in (0..<4).map { Float($0 == label ? 1 : 0) } }
            let t0 = try device.tensor(targets, shape: [batch, 4])
            func loss(_ h: [Float], _ t: [Float]) throws -> Double {
                let output = try LocalLoss().evaluate(
                    h: try device.tensor(h, shape: [batch, width]),
                    t: try device.tensor(t, shape: [batch, width]), t0: t0)
                return Double(try LocalLoss.value(of: output))
            }
            let output = try LocalLoss().evaluate(
                h: try device.tensor(h0, shape: [batch, width]),
                t: try device.tensor(t0v, shape: [batch, width]), t0: t0)
            let (dH, dT) = (try device.read(output.dH), try device.read(output.dT))
            let step: Float = 1e-2
            for index in Set([0, batch * width / 2, batch * width - 1]) {
                var plus = h0
                var minus = h0
                plus[index] += step
                minus[index] -= step
                let numericH = (try loss(plus, t0v) - loss(minus, t0v)) / Double(2 * step)
                #expect(
                    abs(numericH - Double(dH[index])) <= 1e-3 + 2e-2 * abs(numericH),
                    "B\(batch) dH[\(index)] \(dH[index]) vs \(numericH)")
                plus = t0v
                minus = t0v
                plus[index] += step
                minus[index] -= step
                let numericT = (try loss(h0, plus) - loss(h0, minus)) / Double(2 * step)
                #expect(
                    abs(numericT - Double(dT[index])) <= 1e-3 + 2e-2 * abs(numericT),
                    "B\(batch) dT[\(index)] \(dT[index]) vs \(numericT)")
            }
        }
    }

    /// `rounded`: the tied entries an ulp apart, as a BLAS gives them when it sums rows of one
    /// label at different places of its register tiles (OpenBLAS's Haswell kernels do): the
    /// masks must not change, or the loss depends on the CPU's kernels. A gap of 1e-3 stays one.
    @Test(arguments: TestBackend.available, [false, true])
    func localLossKindsBuildTheirMasks(_ backend: TestBackend, rounded: Bool) throws {
        let device = try backend.device()
        let up = { (x: Float) in rounded ? x.nextUp : x }
        let down = { (x: Float) in rounded ? x.nextDown : x }
        let yy: [Float] = [
            2, down(2), 1, 1.998,
            0, 1, up(3), 3,
            5, 4, down(4), 1,
            1, up(1), down(1), 1,
        ]
        let expected: [(LocalLossKind, [Float])] = [
            (.maxAll, [1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]),
            (.maxRandom, [1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            (.topK(2), [1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]),
        ]
        for (kind, mask) in expected {
            let out = try device.zeros([4, 4])
            let dY = try device.zeros([4, 4])
            let rows = try device.zeros([4])
            try device.localLossRows(
                kind, y: try device.tensor(random(16, seed: 22), shape: [4, 4]),
                yy: try device.tensor(yy, shape: [4, 4]),
                mask: out, dY: dY, rowLosses: rows)
            #expect(try device.read(out) == mask, "\(kind)\(rounded ? ", ties an ulp apart" : "")")
            // Each row of dY sums to zero: m_i * sum softmax - sum M = 0.
            let d = try device.read(dY)
            for row in 0..<4 { #expect(abs(d[row * 4..<(row + 1) * 4].reduce(0, +)) < 1e-6) }
        }
    }

    /// top-k's mask against its definition (entry j is kept when fewer than k entries exceed
    /// it by more than the tie tolerance) on rows full of ties, exact and an ulp apart: k
    /// within the kernel's held entries, beyond them (counted), equal to and above the row.
    @Test(arguments: TestBackend.available, [128, 10])
    func topKMaskFollowsItsDefinition(_ backend: TestBackend, columns n: Int) throws {
        let device = try backend.device()
        let rows = 24
        var generator = SeededGenerator(seed: 41)
        let yy: [Float] = (0..<rows * n).map { _ in
            let level = Float(Int.random(in: 0..<9, using: &generator)) * 0.25
            return Bool.random(using: &generator) ? level : level.nextUp
        }
        for k in [1, 2, 6, 16, 17, 40, n, n + 5] {
            var expected = [Float](repeating: 0, count: rows * n)
            for i in 0..<rows {
                let row = yy[i * n..<(i + 1) * n]
                let scale = row.map(abs).max()!
                let tolerance = LocalLossKind.tieTolerance * scale
                for j in row.indices where row.filter({ $0 > row[j] + tolerance }).count < k {
                    expected[j] = 1
                }
            }
            let mask = try device.zeros([rows, n])
            try device.localLossRows(
                .topK(k), y: try device.tensor(random(rows * n, seed: 42), shape: [rows, n]),
                yy: try device.tensor(yy, shape: [rows, n]), mask: mask,
                dY: try device.zeros([rows, n]), rowLosses: try device.zeros([rows]))
            #expect(try device.read(mask) == expected, "top-\(k)")
        }
    }

    @Test(arguments: TestBackend.available)
    func selfCheckTableMatchesTheCPUFallback(_ backend: TestBackend) throws {
        let results = try SelfCheck.run(
            on: try backend.device(), reference: try TestBackend.cpu.device())
        #expect(results.count > 30)
        for result in results {
            #expect(result.passed, "\(result.operation) \(result.shape): NMSE \(result.error)")
        }
    }

    @Test func normalisedErrorDetectsDifferences() {
        #expect(SelfCheck.normalisedSquaredError([1, 2], [1, 2]) == 0)
        #expect(SelfCheck.normalisedSquaredError([1, 2], [1, 2, 3]) == .infinity)
        #expect(SelfCheck.normalisedSquaredError([.nan], [1]) == .infinity)
        #expect(SelfCheck.normalisedSquaredError([1.1], [1]) > 1e-3)
    }
}
