import Foundation
import Testing

@testable import SigProp

/// The fused weight update (`Device.updateWeights`, gemm.cl's `gemm_update_*`): the weight
/// gradient over two operand pairs with the optimizer step in the product's epilogue.
@Suite struct WeightUpdateTests {
    /// M x N, rows of the first pair, rows of the second (0: one pair). Shapes cover 1, 7, 129,
    /// non-multiples of every tile (`gemm_update_outer` and `gemm_update_direct` on PoCL).
    static let shapes: [(Int, Int, Int, Int)] = [
        (1, 1, 1, 0), (7, 7, 7, 1), (129, 7, 13, 10), (7, 129, 128, 10), (33, 17, 129, 0),
        (130, 260, 128, 10),
    ]

    /// A device of its own (the shared test devices keep their backend's choice) that trains
    /// dense layers with the fused update or without it.
    static func device(_ backend: TestBackend, fused: Bool) throws -> Device {
        let device =
            backend == .cpu
            ? try Device.cpu() : try Device.opencl(try #require(TestBackend.openCLEntries.first))
        device.fusesWeightUpdates = fused
        return device
    }

    /// Two steps of every rule against the product and the PyTorch formulas in double; on
    /// OpenCL also posing as a GPU, so gemm_update_tiled runs too.
    @Test(arguments: GemmKernelTests.Target.available)
    func matchesTheProductThenTheStepInDouble(_ target: GemmKernelTests.Target) throws {
        let device = try target.device()
        for (index, (m, n, k1, k2)) in Self.shapes.enumerated() {
            for rule in OptimizerKind.allCases {
                let w0 = random(m * n, seed: 40 + UInt64(index))
                let w = try device.tensor(w0, shape: [m, n])
                let s1 = try device.zeros([m, n])
                let s2 = try device.zeros([m, n])
                let s3 = try device.zeros([m, n])
                var (rw, r1, r2, r3) = (
                    w0.map(Double.init), [Double](repeating: 0, count: m * n),
                    [Double](repeating: 0, count: m * n), [Double](repeating: 0, count: m * n)
                )
                for step in 1...2 {
                    let seed = 50 + 4 * UInt64(step)
                    let a1 = random(k1 * m, seed: seed)
                    let b1 = random(k1 * n, seed: seed + 1)
                    let a2 = random(k2 * m, seed: seed + 2)
                    let b2 = random(k2 * n, seed: seed + 3)
                    var pairs = [
                        (
                            outputGradient: try device.tensor(a1, shape: [k1, m]),
                            input: try device.tensor(b1, shape: [k1, n])
                        )
                    ]
                    if k2 > 0 {
                        pairs.append(
                            (
                                try device.tensor(a2, shape: [k2, m]),
                                try device.tensor(b2, shape: [k2, n])
                            ))
                    }
                    let update =
                        rule == .sgd
                        ? UpdateRule(
                            .sgd, learningRate: 0.1, weightDecay: 0.01, momentum: 0.9,
                            dampening: 0.1, nesterov: true, step: step)
                        : UpdateRule(rule, learningRate: 1e-2, weightDecay: 0.1, step: step)
                    let state = [s1, s2, s3].prefix(update.stateNames.count)
                    try device.updateWeights(
                        w, gradientPairs: pairs, rule: update, state: Array(state))

                    let g1 = naiveProduct(
                        a1, b1, m: m, n: n, k: k1, transposeA: true, transposeB: false)
                    let g2 = naiveProduct(
                        a2, b2, m: m, n: n, k: k2, transposeA: true, transposeB: false)
                    for i in 0..<(m * n) {
                        switch rule {
                        case .sgd:
                            let g = Double(g1[i]) + Double(g2[i]) + 0.01 * rw[i]
                            r1[i] = step == 1 ? g : 0.9 * r1[i] + 0.9 * g
                            rw[i] -= 0.1 * (g + 0.9 * r1[i])
                        case .adam, .amsgrad:
                            let g = Double(g1[i]) + Double(g2[i]) + 0.1 * rw[i]
                            r1[i] = 0.9 * r1[i] + 0.1 * g
                            r2[i] = 0.999 * r2[i] + 0.001 * g * g
                            r3[i] = max(r3[i], r2[i])
                            let bc1 = 1 - pow(0.9, Double(step))
                            let bc2 = 1 - pow(0.999, Double(step))
                            rw[i] -=
                                1e-2 / bc1 * r1[i]
                                / ((rule == .amsgrad ? r3[i] : r2[i]).squareRoot()
                                    / bc2.squareRoot() + 1e-8)
                        }
                    }
                }
                let label = "\(m)x\(n)x(\(k1)+\(k2)) \(rule)"
                expectClose(
                    try device.read(w), rw.map(Float.init), absolute: 1e-4, relative: 1e-4,
                    label + " weight")
                expectClose(
                    try device.read(s1), r1.map(Float.init), absolute: 1e-3, relative: 1e-4,
                    label + " state 1")
                if rule != .sgd {
                    expectClose(
                        try device.read(s2), r2.map(Float.init), absolute: 1e-3, relative: 1e-3,
                        label + " state 2")
                }
                if rule == .amsgrad {
                    expectClose(
                        try device.read(s3), r3.map(Float.init), absolute: 1e-3, relative: 1e-3,
                        label + " state 3")
                }
            }
        }
    }

    /// A dense block's fused step (plain SGD with rate 1, so the weight moves by exactly its
    /// gradient) against finite differences of the block's local loss, both streams included.
    @Test(arguments: TestBackend.available)
    func denseBlockStepMatchesFiniteDifferencesOfTheLoss(_ backend: TestBackend) throws {
        let device = try Self.device(backend, fused: true)
        let (batch, inputs, outputs) = (7, 13, 9)
        var generator = SeededGenerator(seed: 3)
        let layer = try DenseLayer(
            device: device, name: "block", inputs: inputs, outputs: outputs, norm: .layer,
            activation: .leakyRelu, generator: &generator)
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.momentum = 0
        let block = try HiddenBlock(layer: layer, after: [], optimizer: settings)
        let h = try device.tensor(random(batch * inputs, seed: 60), shape: [batch, inputs])
        let t = try device.tensor(
            (0..<batch).flatMap { row in random(inputs, seed: 61 + UInt64(row % 3)) },
            shape: [batch, inputs])
        let w0 = try device.read(layer.weight.value)
        func loss(_ w: [Float]) throws -> Double {
            try device.write(w, to: layer.weight.value)
            let pass = try block.forward(h: h, t: t, on: nil)
            return Double(
                try LocalLoss.value(
                    of: try LocalLoss().evaluate(
                        h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0)))
        }
        var numeric: [Int: Double] = [:]
        let delta: Float = 1e-2
        for index in [0, 17, 58, w0.count - 1] {
            var plus = w0
            var minus = w0
            plus[index] += delta
            minus[index] -= delta
            numeric[index] = (try loss(plus) - loss(minus)) / Double(2 * delta)
        }
        try device.write(w0, to: layer.weight.value)
        _ = try block.train(h: h, t: t, loss: LocalLoss(), learningRate: 1, on: nil)
        let moved = zip(w0, try device.read(layer.weight.value)).map { Double($0 - $1) }
        for (index, expected) in numeric {
            #expect(
                abs(moved[index] - expected) <= 2e-3 + 2e-2 * abs(expected),
                "dW[\(index)]: fused step moved \(moved[index]), finite differences \(expected)")
        }
    }

    /// A layer that may work in the output gradient's storage (what a block's step lets it do)
    /// sets the same parameter gradients, bit for bit, as one that leaves it alone, which
    /// leaves it unchanged: a dense layer with layer norm and a conv layer with instance norm,
    /// whose gradients arrive flattened as the local loss gives them.
    @Test(arguments: TestBackend.available, [false, true])
    func overwritingTheOutputGradientSetsTheSameGradients(_ backend: TestBackend, conv: Bool)
        throws
    {
        let device = try Self.device(backend, fused: false)
        var generator = SeededGenerator(seed: 9)
        let layer: FeatureLayer =
            conv
            ? try ConvLayer(
                device: device, name: "conv", inChannels: 3, outChannels: 5, norm: .instance,
                activation: .leakyRelu, generator: &generator)
            : try DenseLayer(
                device: device, name: "dense", inputs: 37, outputs: 11, norm: .layer,
                activation: .leakyRelu, generator: &generator)
        let shape = conv ? [6, 3, 7, 5] : [6, 37]
        let input = try device.tensor(random(shape.reduce(1, *), seed: 3), shape: shape)
        let pass = try layer.forward(input, on: nil)
        let values = random(pass.output.count, seed: 4)
        func gradients(overwriting: Bool) throws -> (parameters: [[Float]], left: [Float]) {
            let gradient = try device.tensor(
                values, shape: [pass.output.rows, pass.output.columns])
            try layer.accumulateGradients(
                pass, outputGradient: gradient, accumulate: false, overwriting: overwriting,
                on: nil)
            return (
                try layer.parameters.map { try device.read($0.gradient) }, try device.read(gradient)
            )
        }
        let kept = try gradients(overwriting: false)
        let overwritten = try gradients(overwriting: true)
        #expect(kept.parameters == overwritten.parameters)
        #expect(kept.left == values, "without overwriting, the output gradient is unchanged")
        #expect(overwritten.left != values, "overwriting works in the gradient's storage")
    }

    /// Training's fused step and the unfused one (gradients stored, then the optimizer) agree.
    @Test(arguments: TestBackend.available)
    func fusedAndUnfusedBlockStepsAgree(_ backend: TestBackend) throws {
        let device = try Self.device(backend, fused: true)
        func trainedWeights(storing: Bool) throws -> [Float] {
            var generator = SeededGenerator(seed: 5)
            let layer = try DenseLayer(
                device: device, name: "block", inputs: 129, outputs: 33, norm: .layer,
                activation: .leakyRelu, generator: &generator)
            let block = try HiddenBlock(layer: layer, after: [], optimizer: OptimizerSettings())
            for step in 0..<3 {
                let h = try device.tensor(
                    random(16 * 129, seed: 70 + UInt64(step)), shape: [16, 129])
                let t = try device.tensor(
                    random(16 * 129, seed: 80 + UInt64(step)), shape: [16, 129])
                if storing {
                    // The unfused path: every gradient stored, then the optimizer over them.
                    let pass = try block.forward(h: h, t: t, on: nil)
                    let out = try LocalLoss().evaluate(
                        h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0)
                    try layer.accumulateGradients(
                        pass.hPass, outputGradient: out.dH, accumulate: false, on: nil)
                    try layer.accumulateGradients(
                        pass.tPass, outputGradient: out.dT, accumulate: true, on: nil)
                    try block.optimizer.step(learningRate: 5e-4)
                } else {
                    _ = try block.train(h: h, t: t, loss: LocalLoss(), learningRate: 5e-4, on: nil)
                }
            }
            return try layer.parameters.flatMap { try device.read($0.value) }
        }
        expectClose(
            try trainedWeights(storing: false), try trainedWeights(storing: true), absolute: 1e-5,
            relative: 1e-4, "fused vs unfused")
    }

    /// A whole network (signal block with its context part, hidden blocks, output layer) under
    /// the pipelined schedule trains to the same weights with and without the fused update.
    @Test(arguments: TestBackend.available)
    func networksTrainAlikeFusedOrNot(_ backend: TestBackend) throws {
        let states = try [true, false].map { fused in
            try ScheduleTests.trainedState(
                try TrainingTests.network(try Self.device(backend, fused: fused), width: 24),
                options: ScheduleTests.options(), schedule: Schedule(.pipelined))
        }
        if backend == .cpu {
            // The CPU twin runs the same BLAS calls and the same Adam loop, only in cache-sized
            // panels: the same numbers bit for bit.
            #expect(
                states[0] == states[1],
                Comment(
                    rawValue: "fused vs unfused differ in "
                        + "\(zip(states[0], states[1]).filter { $0 != $1 }.count) values")
            )
        } else {
            // One register sum over both streams instead of two products: rounding differs.
            expectClose(
                states[0], states[1], absolute: 1e-4, relative: 1e-3, "fused vs unfused network")
            #expect(
                states[0] != states[1], "the fused path did not run: the two runs are bit-identical"
            )
        }
    }

    @Test func badPairsAreNamed() throws {
        let device = try Device.cpu()
        let w = try device.zeros([4, 3])
        let m = try device.zeros([4, 3])
        let v = try device.zeros([4, 3])
        let rule = UpdateRule(.adam, learningRate: 1e-3, step: 1)
        #expect(throws: SigPropError.self) {
            try device.updateWeights(
                w, gradientPairs: [(try device.zeros([2, 3]), try device.zeros([2, 3]))],
                rule: rule, state: [m, v])
        }
        #expect(throws: SigPropError.self) {
            try device.updateWeights(w, gradientPairs: [], rule: rule, state: [m, v])
        }
        #expect(throws: SigPropError.self) {
            try device.updateWeights(
                w, gradientPairs: [(try device.zeros([2, 4]), try device.zeros([2, 3]))],
                rule: rule, state: [try device.zeros([5]), v])
        }
        // The state the rule keeps, in number.
        #expect(throws: SigPropError.self) {
            try device.updateWeights(
                w, gradientPairs: [(try device.zeros([2, 4]), try device.zeros([2, 3]))],
                rule: rule, state: [m])
        }
    }
}
