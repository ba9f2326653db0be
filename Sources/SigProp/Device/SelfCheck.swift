/// One operation run on a device and on the CPU fallback with the same inputs.
package struct SelfCheckResult: Sendable {
    public let operation: String
    public let shape: String
    /// Normalised mean squared error of every output against the CPU fallback's.
    public let error: Double
    public let tolerance: Double
    public var passed: Bool { error <= tolerance }
}

/// The operation table shared by `doctor` and the tests: every operation on awkward shapes
/// (1, 7, 129, non-multiples of tile sizes), compared with the CPU fallback by normalised
/// mean squared error (ggml's test-backend-ops criterion).
package enum SelfCheck {
    /// ggml's default for float32 operations.
    public static let tolerance = 1e-7

    /// One case: given a device, runs the operation and returns its outputs (host arrays).
    struct Case {
        let operation: String
        let shape: String
        let run: (Device) throws -> [[Float]]
    }

    /// Runs every case on `device` and on `reference`.
    public static func run(on device: Device, reference: Device) throws -> [SelfCheckResult] {
        try cases().map { check in
            let got = try check.run(device)
            let want = try check.run(reference)
            let error = zip(got, want).map { normalisedSquaredError($0, $1) }.max() ?? 0
            return SelfCheckResult(
                operation: check.operation, shape: check.shape, error: error, tolerance: tolerance)
        }
    }

    /// `sum (a - b)^2 / sum b^2` (plain squared error where b is all zeros); infinite on a
    /// length mismatch or a NaN.
    public static func normalisedSquaredError(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        var difference = 0.0
        var norm = 0.0
        for (x, y) in zip(a, b) {
            if x.isNaN != y.isNaN { return .infinity }
            if x.isNaN { continue }
            difference += Double(x - y) * Double(x - y)
            norm += Double(y) * Double(y)
        }
        return norm > 0 ? difference / norm : difference
    }

    static func cases() -> [Case] {
        var cases: [Case] = []
        func input(_ device: Device, _ shape: [Int], seed: UInt64) throws -> Tensor {
            var generator = SeededGenerator(seed: seed)
            return try device.tensor(generator.uniform(shape.reduce(1, *)), shape: shape)
        }

        // gemm: every transpose, odd shapes, alpha/beta, bias and each activation; the last
        // with B's rows 4 KB apart and K deep enough for gemm_outer's padded copy of B.
        let gemmShapes = [
            (1, 1, 1), (7, 129, 13), (129, 7, 33), (33, 65, 1000), (128, 10, 129), (129, 1024, 257),
        ]
        for (index, (m, n, k)) in gemmShapes.enumerated() {
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                let activation = Activation.allCases[index % Activation.allCases.count]
                cases.append(
                    Case(
                        operation: "gemm",
                        shape:
                            "\(m)x\(n)x\(k)_\(ta ? "T" : "N")\(tb ? "T" : "N") "
                            + "\(activation.rawValue)"
                    ) { device in
                        let a = try input(device, ta ? [k, m] : [m, k], seed: 1)
                        let b = try input(device, tb ? [n, k] : [k, n], seed: 2)
                        let c = try input(device, [m, n], seed: 3)
                        let bias = try input(device, [n], seed: 4)
                        try device.gemm(
                            a, transposeA: ta, b, transposeB: tb, into: c, alpha: 0.5, beta: 0.25,
                            bias: bias, activation: activation)
                        return [try device.read(c)]
                    })
            }
        }

        for activation in Activation.allCases {
            cases.append(
                Case(operation: "activation", shape: "1000 \(activation.rawValue)") { device in
                    let x = try input(device, [1000], seed: 5)
                    let g = try input(device, [1000], seed: 6)
                    let y = try device.zeros([1000])
                    try device.activate(activation, x, into: y)
                    try device.activationGradient(activation, output: y, gradient: g, into: g)
                    return [try device.read(y), try device.read(g)]
                })
        }

        cases.append(
            Case(operation: "axpby", shape: "129") { device in
                let x = try input(device, [129], seed: 7)
                let y = try input(device, [129], seed: 8)
                try device.axpby(alpha: 2, x, beta: -0.5, y)
                return [try device.read(y)]
            })

        for (outer, channels, inner) in [(1, 1, 1), (7, 129, 1), (256, 33, 1), (3, 5, 49)] {
            cases.append(
                Case(operation: "channelSums", shape: "\(outer)x\(channels)x\(inner)") { device in
                    let x = try input(device, [outer, channels, inner], seed: 9)
                    let out = try input(device, [channels], seed: 10)
                    try device.channelSums(
                        x, channels: channels, inner: inner, into: out, alpha: 0.5, beta: 1)
                    return [try device.read(out)]
                })
        }

        cases.append(
            Case(operation: "fillNormal", shape: "1000") { device in
                let x = try device.zeros([1000])
                try device.fillNormal(x, deviation: 0.1, seed: 12)
                return [try device.read(x)]
            })
        for count in [2, 129, 7841] {
            cases.append(
                Case(operation: "deviationScale", shape: "\(count)") { device in
                    let factor = try device.zeros([1])
                    try device.deviationScale(
                        of: try input(device, [count], seed: 11), target: 0.05, power: 0.5,
                        sign: -1, into: factor)
                    return [try device.read(factor)]
                })
        }

        // conv: the 3x3/pad 1 training shape (with fewer channels than a register tile, and
        // more: the direct kernels on CPU drivers), a strided 5x5, and 1x1.
        let convs = [
            ConvShape(
                batch: 2, inChannels: 3, height: 7, width: 9, outChannels: 5, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
            ConvShape(
                batch: 2, inChannels: 3, height: 5, width: 29, outChannels: 9, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
            ConvShape(
                batch: 1, inChannels: 2, height: 13, width: 11, outChannels: 7, kernelHeight: 5,
                kernelWidth: 5, stride: 2, padding: 2),
            ConvShape(
                batch: 3, inChannels: 4, height: 1, width: 1, outChannels: 1, kernelHeight: 1,
                kernelWidth: 1, stride: 1, padding: 0),
        ]
        for s in convs {
            let label =
                "b\(s.batch)_c\(s.inChannels)to\(s.outChannels)_\(s.height)x\(s.width)_k\(s.kernelHeight)_s\(s.stride)_p\(s.padding)"
            cases.append(
                Case(operation: "conv2d", shape: label) { device in
                    let x = try input(device, [s.batch, s.inChannels, s.height, s.width], seed: 11)
                    let w = try input(
                        device, [s.outChannels, s.inChannels, s.kernelHeight, s.kernelWidth],
                        seed: 12)
                    let b = try input(device, [s.outChannels], seed: 13)
                    let y = try device.zeros([s.batch, s.outChannels, s.outHeight, s.outWidth])
                    try device.conv2d(
                        x, weight: w, bias: b, into: y, stride: s.stride, padding: s.padding,
                        activation: .leakyRelu)
                    return [try device.read(y)]
                })
            cases.append(
                Case(operation: "conv2dWeightGradient", shape: label) { device in
                    let x = try input(device, [s.batch, s.inChannels, s.height, s.width], seed: 14)
                    let dz = try input(
                        device, [s.batch, s.outChannels, s.outHeight, s.outWidth], seed: 15)
                    let dw = try input(
                        device, [s.outChannels, s.inChannels, s.kernelHeight, s.kernelWidth],
                        seed: 16)
                    let db = try input(device, [s.outChannels], seed: 17)
                    try device.conv2dWeightGradient(
                        x, outputGradient: dz, into: dw, biasGradient: db, beta: 0.5,
                        stride: s.stride, padding: s.padding)
                    return [try device.read(dw), try device.read(db)]
                })
        }

        for kind in PoolKind.allCases {
            for ceil in [false, true] {
                cases.append(
                    Case(
                        operation: "pool2d",
                        shape: "2x3x7x9 \(kind.rawValue)" + (ceil ? " ceil" : "")
                    ) { device in
                        let x = try input(device, [2, 3, 7, 9], seed: 18)
                        let y = try device.zeros(ceil ? [2, 3, 4, 5] : [2, 3, 3, 4])
                        try device.pool2d(kind, x, ceil: ceil, into: y)
                        return [try device.read(y)]
                    })
            }
        }

        for (batch, loss) in [
            (1, LocalLossKind.maxAll), (7, .maxAll), (129, .maxAll), (33, .maxRandom),
            (33, .topK(3)),
        ] {
            cases.append(
                Case(operation: "localLossRows", shape: "B\(batch) \(loss)") { device in
                    let y = try input(device, [batch, batch], seed: 19)
                    // Few distinct values in YY, so rows have ties as with one-hot targets.
                    var generator = SeededGenerator(seed: 20)
                    let yyValues = (0..<(batch * batch)).map { _ in
                        Float(Int.random(in: 0...3, using: &generator))
                    }
                    let yy = try device.tensor(yyValues, shape: [batch, batch])
                    let mask = try device.zeros([batch, batch])
                    let dY = try device.zeros([batch, batch])
                    let rows = try device.zeros([batch])
                    try device.localLossRows(
                        loss, y: y, yy: yy, mask: mask, dY: dY, rowLosses: rows)
                    return [try device.read(mask), try device.read(dY), try device.read(rows)]
                })
        }

        // Rectangular: the output layer's cross entropy against one-hot targets.
        cases.append(
            Case(operation: "localLossRows", shape: "B7xK10 cross-entropy") { device in
                let y = try input(device, [7, 10], seed: 30)
                let yy = try device.tensor(
                    (0..<70).map { Float($0 % 10 == ($0 / 10) % 10 ? 1 : 0) }, shape: [7, 10])
                let mask = try device.zeros([7, 10])
                let dY = try device.zeros([7, 10])
                let rows = try device.zeros([7])
                try device.localLossRows(y: y, yy: yy, mask: mask, dY: dY, rowLosses: rows)
                return [try device.read(mask), try device.read(dY), try device.read(rows)]
            })

        // Layer norm [B, D], instance norm [B, C, P], batch norm [B, C, P] and dense batch norm.
        let layouts = [
            ("layer 1x1", [1, 1], GroupLayout(outer: 1, groups: 1, inner: 1)),
            ("layer 7x129", [7, 129], GroupLayout(outer: 1, groups: 7, inner: 129)),
            ("layer 256x1000", [256, 1000], GroupLayout(outer: 1, groups: 256, inner: 1000)),
            ("instance 3x5x7x7", [3, 5, 7, 7], GroupLayout(outer: 1, groups: 15, inner: 49)),
            ("batch 3x5x7x7", [3, 5, 7, 7], GroupLayout(outer: 3, groups: 5, inner: 49)),
            ("batch 129x7", [129, 7], GroupLayout(outer: 129, groups: 7, inner: 1)),
        ]
        for (label, shape, layout) in layouts {
            cases.append(
                Case(operation: "normalize", shape: label) { device in
                    let channels = shape[1]
                    let inner = shape.count == 4 ? shape[2] * shape[3] : 1
                    let x = try input(device, shape, seed: 31)
                    let g = try input(device, shape, seed: 32)
                    let scale = try input(device, [channels], seed: 33)
                    let shift = try input(device, [channels], seed: 34)
                    let xhat = try device.zeros(shape)
                    let rstd = try device.zeros([layout.groups])
                    let y = try device.zeros(shape)
                    try device.normalize(x, layout: layout, into: xhat, rstd: rstd)
                    try device.scaleShiftChannels(
                        xhat, scale: scale, shift: shift, inner: inner, into: y)
                    try device.multiply(g, xhat, into: g)
                    try device.normalizeGradient(g, xhat: xhat, rstd: rstd, layout: layout, into: g)
                    return [
                        try device.read(xhat), try device.read(rstd), try device.read(y),
                        try device.read(g),
                    ]
                })
        }

        for amsgrad in [false, true] {
            cases.append(
                Case(operation: "adamStep", shape: "1000 \(amsgrad ? "amsgrad" : "adam") x3") {
                    device in
                    let p = try input(device, [1000], seed: 21)
                    let m = try device.zeros([1000])
                    let v = try device.zeros([1000])
                    let vMax = try device.zeros([1000])
                    for step in 1...3 {
                        let g = try input(device, [1000], seed: 22 + UInt64(step))
                        try device.step(
                            p, gradient: g,
                            rule: UpdateRule(
                                amsgrad ? .amsgrad : .adam, learningRate: 1e-3, weightDecay: 0.01,
                                step: step),
                            state: [m, v] + (amsgrad ? [vMax] : []))
                    }
                    return [try device.read(p), try device.read(m), try device.read(v)]
                })
        }

        cases.append(
            Case(operation: "sgdStep", shape: "129 momentum nesterov x3") { device in
                let p = try input(device, [129], seed: 26)
                let buffer = try device.zeros([129])
                for step in 1...3 {
                    let g = try input(device, [129], seed: 27 + UInt64(step))
                    try device.step(
                        p, gradient: g,
                        rule: UpdateRule(
                            .sgd, learningRate: 0.1, weightDecay: 1e-4, momentum: 0.9,
                            nesterov: true, step: step),
                        state: [buffer])
                }
                return [try device.read(p), try device.read(buffer)]
            })

        // The fused weight update: both operand pairs, one pair, every rule, two steps each.
        let rules = ["adam", "amsgrad", "sgd"]
        for (index, (m, n, k1, k2)) in [
            (1, 1, 1, 0), (7, 129, 13, 3), (129, 7, 33, 10), (33, 65, 129, 10), (128, 1000, 7, 0),
        ].enumerated() {
            let rule = rules[index % rules.count]
            cases.append(
                Case(operation: "updateWeights", shape: "\(m)x\(n)x(\(k1)+\(k2)) \(rule) x2") {
                    device in
                    let w = try input(device, [m, n], seed: 31)
                    let s1 = try device.zeros([m, n])
                    let s2 = try device.zeros([m, n])
                    let s3 = try device.zeros([m, n])
                    for step in 1...2 {
                        let seed = 32 + 4 * UInt64(step)
                        var pairs = [
                            (
                                outputGradient: try input(device, [k1, m], seed: seed),
                                input: try input(device, [k1, n], seed: seed + 1)
                            )
                        ]
                        if k2 > 0 {
                            pairs.append(
                                (
                                    try input(device, [k2, m], seed: seed + 2),
                                    try input(device, [k2, n], seed: seed + 3)
                                ))
                        }
                        let (update, state): (UpdateRule, [Tensor]) =
                            rule == "sgd"
                            ? (
                                UpdateRule(
                                    .sgd, learningRate: 0.1, weightDecay: 1e-4, momentum: 0.9,
                                    nesterov: true, step: step), [s1]
                            )
                            : (
                                UpdateRule(
                                    rule == "amsgrad" ? .amsgrad : .adam, learningRate: 1e-3,
                                    weightDecay: 0.01, step: step),
                                rule == "amsgrad" ? [s1, s2, s3] : [s1, s2]
                            )
                        try device.updateWeights(
                            w, gradientPairs: pairs, rule: update, state: state)
                    }
                    return [
                        try device.read(w), try device.read(s1), try device.read(s2),
                        try device.read(s3),
                    ]
                })
        }
        return cases
    }
}
