// The `opencl` and `cpu` iterations of the learning rules' own kernels: Forward-Forward's row
// pass and PEPITA's layer step, each next to the same arithmetic as separate operations.

import Foundation
import SigProp

// MARK: Forward-Forward

/// Forward-Forward's row pass over one layer's pre-activations A [3B, D] (positives,
/// negatives, neutral rows), with the peer term already computed as the layer computes it.
/// `fused`: one `Device.forwardForwardRows` launch. Unfused: the same outputs from the
/// device's generic operations, twelve launches. Before timing, the unfused form's setup runs
/// both once and throws if their outputs differ beyond float rounding.
func sigpropForwardForwardRows(_ device: Device, _ shape: ForwardForwardCase, fused: Bool) throws
    -> () throws -> Void
{
    let settings = ForwardForwardSettings()
    let threshold = settings.thresholdPerUnit * Float(shape.width)
    let a = try device.tensor(
        forwardForwardPreActivations(shape, threshold: threshold), shape: [shape.rows, shape.width])
    let peer = try device.zeros([shape.width])
    let runningMean = try device.tensor(
        [Float](repeating: 0.5, count: shape.width), shape: [shape.width])
    try device.forwardForwardPeer(
        a, positives: shape.batch, runningMean: runningMean, peer: peer,
        momentum: settings.peerMomentum, weight: settings.peerWeight)
    let fusedForm = try FusedForwardForwardRows(device, shape, threshold: threshold)
    guard !fused else {
        try device.defaultStream.synchronize()
        return {
            try fusedForm.run(a, peer: peer)
            try device.defaultStream.synchronize()
        }
    }
    let unfusedForm = try UnfusedForwardForwardRows(device, shape, threshold: threshold)
    try fusedForm.run(a, peer: peer)
    try unfusedForm.run(a, peer: peer)
    try checkSame(fusedForm, unfusedForm, shape)
    return {
        try unfusedForm.run(a, peer: peer)
        try device.defaultStream.synchronize()
    }
}

/// Pre-activations whose rows' goodness lies within a few units of the threshold, where the
/// logistic loss is not saturated, so that the check compares gradients that carry
/// information: random values, each row scaled to its goodness.
func forwardForwardPreActivations(_ shape: ForwardForwardCase, threshold: Float) -> [Float] {
    var values = randomValues(shape.rows * shape.width, seed: 7)
    for r in 0..<shape.rows {
        let row = r * shape.width..<(r + 1) * shape.width
        let goodness = values[row].reduce(Float(0)) { $0 + max($1, 0) * max($1, 0) }
        let target = threshold + 8 * (Float(r % 17) / 16 - 0.5)
        let scale = (target / goodness).squareRoot()
        for j in row { values[j] *= scale }
    }
    return values
}

/// The outputs of one row pass.
protocol ForwardForwardRowPass {
    /// Each row's goodness [3B], its normalised copy (first 3B·D values), the loss rows'
    /// gradient (first 2B·D values) and their losses (first 2B values).
    var outputs: (sumSquares: Tensor, normalized: Tensor, gradient: Tensor, rowLosses: Tensor) {
        get
    }
    func run(_ a: Tensor, peer: Tensor) throws
}

/// `Device.forwardForwardRows` as `ForwardForwardBlock` calls it for its positive and
/// negative rows, with the neutral rows in the same launch (rows past the loss rows are only
/// normalised).
final class FusedForwardForwardRows: ForwardForwardRowPass {
    let shape: ForwardForwardCase
    let threshold: Float
    let outputs: (sumSquares: Tensor, normalized: Tensor, gradient: Tensor, rowLosses: Tensor)

    init(_ device: Device, _ shape: ForwardForwardCase, threshold: Float) throws {
        self.shape = shape
        self.threshold = threshold
        outputs = (
            try device.zeros([shape.rows]), try device.zeros([shape.rows, shape.width]),
            try device.zeros([shape.lossRows, shape.width]), try device.zeros([shape.lossRows])
        )
    }

    func run(_ a: Tensor, peer: Tensor) throws {
        try a.device.forwardForwardRows(
            a, normalized: outputs.normalized, sumSquares: outputs.sumSquares,
            positives: shape.batch, threshold: threshold, gradient: outputs.gradient,
            rowLosses: outputs.rowLosses, peer: peer)
    }
}

/// The row pass from generic operations. No generic operation takes a row's root mean
/// square, the logistic loss or a slice of rows, so:
/// - the normalised rows come from `normalize` over [h; -h] (a rank-1 product stacks them):
///   each row's group then has mean 0 and variance ss / D, and epsilon sits inside the square
///   root rather than beside it, which changes nothing at this goodness;
/// - the loss is the local loss's two-class cross entropy of [ss - threshold, 0] against
///   [1, 0] (positives) or [0, 1] (negatives), the logistic loss and its gradient exactly;
/// - every row gets a loss and a gradient row, then a 0/1 row mask drops the neutral ones:
///   the gradient is [3B, D] here, its neutral rows zero.
final class UnfusedForwardForwardRows: ForwardForwardRowPass {
    let shape: ForwardForwardCase
    let h: Tensor, squares: Tensor, sumSquares: Tensor
    let stackSigns: Tensor, stacked: Tensor, stackedNormalized: Tensor, rstd: Tensor
    let logitColumn: Tensor, logitBias: Tensor, logits: Tensor, targets: Tensor
    let mask: Tensor, dLogits: Tensor, allRowLosses: Tensor
    let coefficientColumn: Tensor, coefficients: Tensor, lossRowMask: Tensor
    let positiveRows: Tensor, gradient: Tensor, lossScale: Tensor, rowLosses: Tensor

    init(_ device: Device, _ shape: ForwardForwardCase, threshold: Float) throws {
        self.shape = shape
        let (rows, width) = (shape.rows, shape.width)
        h = try device.zeros([rows, width])
        squares = try device.zeros([rows, width])
        sumSquares = try device.zeros([rows])
        stackSigns = try device.tensor([1, -1], shape: [2, 1])
        stacked = try device.zeros([2, rows * width])
        stackedNormalized = try device.zeros([2, rows * width])
        rstd = try device.zeros([rows])
        logitColumn = try device.tensor([1, 0], shape: [1, 2])
        logitBias = try device.tensor([-threshold, 0], shape: [2])
        logits = try device.zeros([rows, 2])
        targets = try device.tensor(
            (0..<rows).flatMap { $0 < shape.batch ? [Float(1), 0] : [0, 1] }, shape: [rows, 2])
        mask = try device.zeros([rows, 2])
        dLogits = try device.zeros([rows, 2])
        allRowLosses = try device.zeros([rows])
        // The local loss averages over all 3B rows and the logistic loss over the 2B loss
        // rows; d loss / d a is 2 h times d loss / d ss.
        let rowShare = Float(rows) / Float(shape.lossRows)
        coefficientColumn = try device.tensor([2 * rowShare, 0], shape: [2, 1])
        coefficients = try device.zeros([rows, 1])
        lossRowMask = try device.tensor(
            (0..<rows).map { $0 < shape.lossRows ? 1 : 0 }, shape: [rows])
        positiveRows = try device.tensor(
            (0..<rows).map { $0 < shape.batch ? 1 : 0 }, shape: [rows, 1])
        gradient = try device.zeros([rows, width])
        lossScale = try device.tensor(
            (0..<rows).map { $0 < shape.lossRows ? rowShare : 0 }, shape: [rows])
        rowLosses = try device.zeros([rows])
    }

    var outputs: (sumSquares: Tensor, normalized: Tensor, gradient: Tensor, rowLosses: Tensor) {
        (sumSquares, stackedNormalized, gradient, rowLosses)
    }

    func run(_ a: Tensor, peer: Tensor) throws {
        let device = a.device
        let (rows, width) = (shape.rows, shape.width)
        // Goodness: ss = sum over each row of relu(a)².
        try device.activate(.relu, a, into: h)
        try device.multiply(h, h, into: squares)
        try device.channelSums(squares, channels: rows, inner: width, into: sumSquares)
        // Normalised rows: the first half of normalize([h; -h]).
        try device.gemm(stackSigns, try h.reshaped([1, rows * width]), into: stacked)
        try device.normalize(
            stacked, layout: GroupLayout(outer: 2, groups: rows, inner: width),
            into: stackedNormalized, rstd: rstd, epsilon: 1e-8)
        // Loss: logits [ss - threshold, 0] per row, the local loss's cross entropy.
        try device.gemm(
            try sumSquares.reshaped([rows, 1]), logitColumn, into: logits, bias: logitBias)
        try device.localLossRows(
            y: logits, yy: targets, mask: mask, dY: dLogits, rowLosses: allRowLosses)
        // Gradient: 2 (sigmoid(s) - y) / 2B times h on the loss rows, plus the peer term on
        // the positives (a rank-1 product adds it).
        try device.gemm(dLogits, coefficientColumn, into: coefficients)
        try device.multiply(try coefficients.reshaped([rows]), lossRowMask, into: coefficients)
        try device.scaleShiftChannels(
            h, scale: try coefficients.reshaped([rows]), inner: width, into: gradient)
        try device.gemm(
            positiveRows, try peer.reshaped([1, width]), into: gradient, beta: 1)
        try device.multiply(allRowLosses, lossScale, into: rowLosses)
    }
}

/// Throws unless the two forms' outputs agree to within float rounding (relative to each
/// output's largest magnitude), so that the timings compare the same work. The loss and its
/// gradient get a wider margin: they depend on ss - threshold with ss close to the threshold,
/// so the last bits of ss, summed in another order by each form, count a thousandfold.
func checkSame(
    _ fused: some ForwardForwardRowPass, _ unfused: some ForwardForwardRowPass,
    _ shape: ForwardForwardCase
) throws {
    let (f, u) = (fused.outputs, unfused.outputs)
    let (rows, lossRows, width) = (shape.rows, shape.lossRows, shape.width)
    let compared: [(String, Tensor, Tensor, Int, Float)] = [
        ("goodness", f.sumSquares, u.sumSquares, rows, 1e-5),
        ("normalised rows", f.normalized, u.normalized, rows * width, 1e-5),
        ("gradient", f.gradient, u.gradient, lossRows * width, 2e-3),
        ("row losses", f.rowLosses, u.rowLosses, lossRows, 2e-3),
    ]
    for (name, fusedTensor, unfusedTensor, count, tolerance) in compared {
        let expected = try fusedTensor.device.read(fusedTensor).prefix(count)
        let actual = try unfusedTensor.device.read(unfusedTensor).prefix(count)
        let largest = expected.map(abs).max() ?? 0
        let error = zip(expected, actual).map { abs($0 - $1) }.max() ?? 0
        guard error <= tolerance * largest else {
            throw BenchmarkSetupError(
                "ff_rows: the unfused \(name) differ from the fused kernel's by \(error) "
                    + "(largest value \(largest))")
        }
    }
    let neutral = try u.gradient.device.read(u.gradient).dropFirst(lossRows * width)
    guard neutral.allSatisfy({ $0 == 0 }) else {
        throw BenchmarkSetupError("ff_rows: the unfused gradient's neutral rows are not zero")
    }
}

/// A batch's first-layer rows for `shape`: unit-RMS images with their label, a wrong label
/// and 1/K in each label input (neutral), written over their first K inputs; and the labels.
func firstLayerRows(_ shape: FirstLayerCase) -> (
    positives: [Float], negatives: [Float], neutral: [Float], labels: [Int], wrong: [Int]
) {
    let (batch, inputs, classes) = (shape.batch, shape.inputs, shape.classes)
    let images = randomValues(batch * inputs, seed: 11).map { abs($0) }
    let labels = (0..<batch).map { $0 % classes }
    let wrong = labels.map { ($0 + 1 + $0 * 7 % (classes - 1)) % classes }
    /// The images with `label(b)` written in (nil: 1/K each), each row at unit RMS.
    func rows(_ label: (Int) -> Int?) -> [Float] {
        (0..<batch).flatMap { b in
            var row = Array(images[(b * inputs)..<((b + 1) * inputs)])
            for k in 0..<classes { row[k] = label(b).map { k == $0 ? 1 : 0 } ?? 1 / Float(classes) }
            let rms = (row.reduce(0) { $0 + $1 * $1 } / Float(inputs)).squareRoot()
            return row.map { $0 / (rms + 1e-8) }
        }
    }
    return (rows { labels[$0] }, rows { wrong[$0] }, rows { _ in nil }, labels, wrong)
}

/// Forward-Forward's first-layer weight gradient over a batch's positive and negative rows,
/// as `ForwardForwardBlock.learnFromPositives` forms it: the two row sets' gradients summed,
/// one product over the B positive rows, then the negatives' share in the label columns
/// (`Device.forwardForwardRelabelGradient`). Unfused: the product over all 2B rows. Before
/// timing, the setup runs both once and throws if they differ beyond float rounding.
func sigpropForwardForwardFirstLayerGradient(
    _ device: Device, _ shape: FirstLayerCase, relabel: Bool
) throws -> () throws -> Void {
    let (batch, inputs, units, classes) = (shape.batch, shape.inputs, shape.units, shape.classes)
    let rows = firstLayerRows(shape)
    let pairs = try device.tensor(rows.positives + rows.negatives, shape: [2 * batch, inputs])
    let z = try device.tensor(rows.positives, shape: [batch, inputs])
    let gradient = try device.tensor(
        randomValues(2 * batch * units, seed: 14), shape: [2 * batch, units])
    let (summed, negatives) = (try device.zeros([batch, units]), try device.zeros([batch, units]))
    let (unfusedOut, derivedOut) = (
        try device.zeros([units, inputs]), try device.zeros([units, inputs])
    )
    let plan = (0..<batch).map { ($0, rows.labels[$0], rows.wrong[$0]) }
    let unfused = {
        try device.gemm(gradient, transposeA: true, pairs, into: unfusedOut)
        try device.defaultStream.synchronize()
    }
    let derived = {
        try device.copyRows(gradient, 0..<batch, into: summed, at: 0)
        try device.copyRows(gradient, batch..<(2 * batch), into: negatives, at: 0)
        try device.axpby(alpha: 1, negatives, beta: 1, summed)
        try device.gemm(summed, transposeA: true, z, into: derivedOut)
        try device.forwardForwardRelabelGradient(
            gradient, inputs: z, classes: classes, rows: plan, firstRow: batch, into: derivedOut)
        try device.defaultStream.synchronize()
    }
    guard relabel else { return unfused }
    try unfused()
    try derived()
    let (expected, actual) = (try device.read(unfusedOut), try device.read(derivedOut))
    let largest = expected.map(abs).max() ?? 0
    let error = zip(expected, actual).map { abs($0 - $1) }.max() ?? 0
    guard error <= 1e-4 * largest else {
        throw BenchmarkSetupError(
            "ff_first_layer_gradient: the derived gradient differs from the product over both "
                + "row sets by \(error) (largest value \(largest))")
    }
    return derived
}

/// Forward-Forward's first layer on a batch's positive, negative and neutral rows (unit-RMS
/// images with a label written over their first K inputs), as `ForwardForwardBlock` runs it:
/// the product over the B positive rows, then the negatives and the neutral rows from it
/// (`Device.forwardForwardRelabel`). Unfused: the product over all 3B rows. Before timing,
/// the setup runs both once and throws if their pre-activations differ beyond float rounding.
func sigpropForwardForwardFirstLayer(
    _ device: Device, _ shape: FirstLayerCase, relabel: Bool
) throws -> () throws -> Void {
    let (batch, inputs, units, classes) = (shape.batch, shape.inputs, shape.units, shape.classes)
    let (positives, negatives, neutral, labels, wrong) = firstLayerRows(shape)
    let weight = try device.tensor(
        randomValues(units * inputs, seed: 12).map { $0 / Float(units).squareRoot() },
        shape: [units, inputs])
    let bias = try device.tensor(randomValues(units, seed: 13), shape: [units])
    let all = try device.tensor(positives + negatives + neutral, shape: [3 * batch, inputs])
    let (z, zNeutral) = (
        try device.tensor(positives, shape: [batch, inputs]),
        try device.tensor(neutral, shape: [batch, inputs])
    )
    let (unfusedOut, pairs, neutralOut) = (
        try device.zeros([3 * batch, units]), try device.zeros([2 * batch, units]),
        try device.zeros([batch, units])
    )
    let first = try device.zeros([batch, units])
    let unfused = {
        try device.gemm(all, weight, transposeB: true, into: unfusedOut, bias: bias)
        try device.defaultStream.synchronize()
    }
    let derived = {
        try device.gemm(z, weight, transposeB: true, into: first, bias: bias)
        try device.copyRows(first, 0..<batch, into: pairs, at: 0)
        try device.forwardForwardRelabel(
            first, inputs: z, weight: weight, bias: bias, classes: classes,
            rows: (0..<batch).map { ($0, labels[$0], wrong[$0]) }, into: pairs, at: batch)
        try device.forwardForwardRelabel(
            first, inputs: z, weight: weight, bias: bias, classes: classes,
            rows: (0..<batch).map { ($0, labels[$0], nil) }, neutral: zNeutral, into: neutralOut)
        try device.defaultStream.synchronize()
    }
    guard relabel else { return unfused }
    try unfused()
    try derived()
    let expected = try device.read(unfusedOut)
    let actual = try device.read(pairs) + device.read(neutralOut)
    let largest = expected.map(abs).max() ?? 0
    let error = zip(expected, actual).map { abs($0 - $1) }.max() ?? 0
    guard error <= 1e-5 * largest else {
        throw BenchmarkSetupError(
            "ff_first_layer: the derived rows differ from their product by \(error) (largest "
                + "value \(largest))")
    }
    return derived
}

// MARK: PEPITA

/// A PEPITA hidden layer's step as `PEPITAModulatedStage` takes it: `(clean - modulated) / B`,
/// then `DenseLayer.learn` with the rule's SGD (the layer's path for the device: the step in
/// the product's epilogue where the device fuses weight updates, else the product into the
/// gradient, then the step). `fused`: the copy and one axpby that subtracts and scales, as
/// the library forms the difference; unfused: the copy, a subtraction, then a scaling. The
/// unfused form's setup first checks that both give the same difference.
func sigpropPEPITAStep(_ device: Device, _ shape: PEPITAStepCase, fused: Bool) throws
    -> () throws -> Void
{
    let (b, i, n) = (shape.batch, shape.inputs, shape.outputs)
    var generator = SeededGenerator(seed: 11)
    let layer = try DenseLayer(
        device: device, name: "pepita", inputs: i, outputs: n, bias: false,
        activation: .identity, generator: &generator)
    let optimizer = try Optimizer(
        settings: LearningRule.pepitaOptimizer, parameters: layer.parameters)
    let modulatedInput = try randomTensor(device, [b, i], seed: 12)
    let pass = try layer.forward(modulatedInput, on: nil)
    let clean = try randomTensor(device, [b, n], seed: 13)
    let modulated = try randomTensor(device, [b, n], seed: 14)
    let difference = try device.zeros([b, n])
    let scaled = try device.zeros([b, n])
    let inverseBatch = 1 / Float(b)
    let formFused = {
        try device.copy(clean, to: difference)
        try device.axpby(alpha: -inverseBatch, modulated, beta: inverseBatch, difference)
        return difference
    }
    let formUnfused = {
        try device.copy(clean, to: difference)
        try device.axpby(alpha: -1, modulated, beta: 1, difference)
        try device.axpby(alpha: inverseBatch, difference, beta: 0, scaled)
        return scaled
    }
    if !fused {
        let expected = try device.read(try formFused())
        let actual = try device.read(try formUnfused())
        let largest = expected.map(abs).max() ?? 0
        let error = zip(expected, actual).map { abs($0 - $1) }.max() ?? 0
        guard error <= 1e-5 * largest else {
            throw BenchmarkSetupError(
                "pepita_step: the unfused difference differs by \(error) (largest \(largest))")
        }
    }
    try device.defaultStream.synchronize()
    return {
        let gradient = fused ? try formFused() : try formUnfused()
        try layer.learn(
            from: [(pass, gradient)], step: optimizer.beginStep(learningRate: 0.01), on: nil)
        try device.defaultStream.synchronize()
    }
}
