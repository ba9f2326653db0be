import Foundation

/// One layer of a PEPITA network (docs/learning-rules.md): `h = relu(W z)` (the output layer:
/// `W z`, the logits), no bias. It runs twice per batch, as two stages on one stream: the
/// clean pass, and the modulated pass that learns from the difference of the two.
public final class PEPITALayer {
    /// The layer's name (`layer0`, ...), the prefix of its tensors' names in checkpoints.
    public let name: String
    /// The product; ReLU is applied beside it, since PEPITA's update takes no derivative.
    public let layer: DenseLayer
    public let optimizer: Optimizer
    public let isOutput: Bool
    /// The probability that dropout zeroes a unit in training; one mask per batch serves both
    /// passes, so the two passes compare the same units.
    public let dropout: Float
    /// With weight mirroring: this layer's factor `B_l` [inputs, outputs] of the feedback
    /// projection, and how it learns (nil: F is fixed).
    public private(set) var feedbackFactor: Parameter?
    public private(set) var mirroring: FeedbackMirroring?
    /// Where the clean pass leaves its mask for the modulated pass of the same batch.
    var maskKey: String { "\(layer.weight.name).dropout" }
    /// Where a batch may carry the noise of this layer's mirroring step (reference vectors);
    /// without it the noise is drawn from the batch's generator.
    public var mirrorNoiseKey: String { "\(layer.weight.name).mirror-noise" }

    /// Weights uniform in ±sqrt(6 / inputs) (He-uniform, as the authors' code).
    init(
        device: Device, name: String, inputs: Int, outputs: Int, isOutput: Bool, dropout: Float,
        optimizer: OptimizerSettings, generator: inout SeededGenerator
    ) throws {
        self.name = name
        layer = try DenseLayer(
            device: device, name: name, inputs: inputs, outputs: outputs, bias: false,
            activation: .identity, generator: &generator)
        let bound = (6 / Float(inputs)).squareRoot()
        try device.write(
            generator.uniform(inputs * outputs, in: -bound...bound), to: layer.weight.value)
        self.optimizer = try Optimizer(settings: optimizer, parameters: layer.parameters)
        self.isOutput = isOutput
        self.dropout = dropout
    }

    /// The layer on `z`: its pass (the product before ReLU) and its output, times `mask`
    /// where given (dropout in training).
    func forward(_ z: Tensor, mask: Tensor? = nil, on stream: Stream?) throws -> (
        LayerPass, Tensor
    ) {
        let pass = try layer.forward(try z.reshaped([z.rows, z.columns]), on: stream)
        guard !isOutput else { return (pass, pass.output) }
        let h = try z.device.allocate(pass.output.shape, on: stream)
        try z.device.activate(.relu, pass.output, into: h, on: stream)
        if let mask { try z.device.multiply(h, mask, into: h, on: stream) }
        return (pass, h)
    }

    /// Gives the layer a feedback factor that mirrors its weights: entries normal with
    /// deviation `deviation`.
    func mirror(
        with settings: FeedbackMirroring, deviation: Float, generator: inout SeededGenerator
    ) throws {
        let (inputs, outputs) = (layer.inputs, layer.outputs)
        mirroring = settings
        feedbackFactor = try Parameter(
            name: "\(name).mirror",
            value: layer.weight.value.device.tensor(
                generator.normal(inputs * outputs, deviation: deviation),
                shape: [inputs, outputs]))
    }

    /// One mirroring step of the factor after the batch's update: the layer's output `y` for
    /// centred noise `xi` (dropout with a fresh mask, the output layer's softmax), then
    /// `B <- (1 - rate decay) B + rate xi^T y / B`.
    func mirrorStep(_ batch: BatchContext, on stream: Stream) throws {
        guard let mirroring, mirroring.mirrors(in: batch.epoch), let factor = feedbackFactor
        else { return }
        let device = stream.device
        let rows = batch.size
        let noise: Tensor
        if let given = batch.shared[mirrorNoiseKey] as? Tensor {
            noise = given
        } else {
            // Drawn on the device from a seed of the batch's generator, then minus its mean.
            noise = try device.allocate([rows, layer.inputs], on: stream)
            try device.fillNormal(
                noise, deviation: mirroring.noise, seed: batch.generator.next(), on: stream)
            let (one, negativeMean) = (
                try device.allocate([1], on: stream), try device.allocate([1], on: stream)
            )
            try device.fill(one, with: 1, on: stream)
            try device.channelSums(
                noise, channels: 1, inner: noise.count, into: negativeMean,
                alpha: -1 / Float(noise.count), on: stream)
            try device.scaleShiftChannels(
                noise, scale: one, shift: negativeMean, inner: noise.count, into: noise,
                on: stream)
        }
        let freshMask =
            dropout > 0 && !isOutput
            ? try batch.dropout?.mask(
                [rows, layer.outputs], p: dropout, device: device, on: stream) : nil
        let (pass, h) = try forward(noise, mask: freshMask, on: stream)
        let (response, responseScale): (Tensor, Float) =
            isOutput
            ? (try softmaxOverRows(pass.output, on: stream), mirroring.rate)
            : (h, mirroring.rate / Float(rows))
        try device.gemm(
            noise, transposeA: true, response, into: factor.value, alpha: responseScale,
            beta: 1 - mirroring.rate * mirroring.decay, on: stream)
    }

    /// softmax(logits) / B, from the cross entropy's gradient against class 0 for every row,
    /// (softmax - onehot) / B, with onehot / B added back.
    private func softmaxOverRows(_ logits: Tensor, on stream: Stream) throws -> Tensor {
        let rows = logits.rows
        let first = try BatchContext.onehot(
            [Int32](repeating: 0, count: rows), classes: logits.columns, device: stream.device,
            on: stream)
        let gradient = try LocalLoss.crossEntropy(logits: logits, onehot: first, on: stream)
            .gradient
        try stream.device.axpby(alpha: 1 / Float(rows), first, beta: 1, gradient, on: stream)
        return gradient
    }

    /// Whether the layer's weights learn from a batch of `epoch` (not in pre-mirroring).
    func learns(in epoch: Int) -> Bool { epoch >= (mirroring?.preMirrorEpochs ?? 0) }

    /// This batch's dropout mask: drawn by the clean pass, found again by the modulated one.
    func mask(_ batch: BatchContext, rows: Int, on stream: Stream) throws -> Tensor? {
        guard dropout > 0, !isOutput, let masks = batch.dropout else { return nil }
        if let mask = batch.shared[maskKey] as? Tensor { return mask }
        let mask = try masks.mask(
            [rows, layer.outputs], p: dropout, device: stream.device, on: stream)
        batch.shared[maskKey] = mask
        return mask
    }
}

/// PEPITA's clean pass through one layer. Hands on `[h, x, h_1, ..., h_l]` (the output layer:
/// `[e / B, x, logits, h_1, ..., h_{L-1}, losses]`, e = softmax(logits) − onehot, losses the
/// rows' cross entropy), what the modulated pass needs. The last modulated stage reports the
/// cross entropy; no other stage has a loss (0).
public final class PEPITACleanStage: TrainingStage {
    public let layer: PEPITALayer
    let isFirst: Bool

    init(layer: PEPITALayer, isFirst: Bool) {
        self.layer = layer
        self.isFirst = isFirst
    }

    public var optimizers: [Optimizer] { [] }
    public var reportsLoss: Bool { false }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let device = stream.device
        let x = isFirst ? try batch.samples(on: stream) : inputs[1]
        let z = isFirst ? x : inputs[0]
        let clean = isFirst ? [] : Array(inputs.dropFirst(2))
        let (_, h) = try layer.forward(
            z, mask: try layer.mask(batch, rows: batch.size, on: stream), on: stream)
        guard layer.isOutput else {
            let rows = try device.zeros([batch.size], on: stream)
            return StagePass(outputs: [h, x] + clean + [h]) { _ in rows }
        }
        // Cross entropy's gradient by the logits is (softmax - onehot) / B: PEPITA's error,
        // averaged over the batch as its updates are.
        let (error, losses) = try LocalLoss.crossEntropy(
            logits: h, onehot: try batch.onehot(on: stream), on: stream)
        let rows = try device.zeros([batch.size], on: stream)
        return StagePass(outputs: [error, x, h] + clean + [losses]) { _ in rows }
    }
}

/// PEPITA's modulated pass through one layer, which learns. The first layer reads
/// `x + F e` (`F` fixed and random); layer l steps with `(h_l − h_l^mod)ᵀ h_{l−1}^mod / B`, the
/// output layer with `(e / B)ᵀ h_{L−1}^mod`. Hands on `[h^mod, e / B, logits, h_{l+1}, ...,
/// losses]`; the last hands on the clean logits, for the batch's training accuracy, and
/// reports the clean pass's cross entropy.
public final class PEPITAModulatedStage: TrainingStage {
    public let layer: PEPITALayer
    /// The first layer's projection of the error onto the input, [D0, K]: fixed, or with
    /// weight mirroring the product of every layer's factor.
    public let feedback: Parameter?
    /// With weight mirroring, the first layer's: every layer's factor, first to last, and the
    /// deviation F is kept at.
    let mirrored: (factors: [Parameter], deviation: Float)?

    init(layer: PEPITALayer, feedback: Parameter?, mirrored: ([Parameter], Float)? = nil) {
        self.layer = layer
        self.feedback = feedback
        self.mirrored = mirrored
    }

    public var optimizers: [Optimizer] { [layer.optimizer] }
    public var buffers: [Parameter] {
        (feedback.map { [$0] } ?? []) + (layer.feedbackFactor.map { [$0] } ?? [])
    }
    /// The output layer's pass reports the cross entropy; the hidden layers have no loss.
    public var reportsLoss: Bool { layer.isOutput }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let device = stream.device
        let step = { (pass: LayerPass, gradient: Tensor) in
            { (stream: Stream) throws -> Tensor in
                if self.layer.learns(in: batch.epoch) {
                    try self.layer.layer.learn(
                        from: [(pass, gradient)],
                        step: self.layer.optimizer.beginStep(learningRate: batch.learningRate),
                        on: stream)
                }
                try self.layer.mirrorStep(batch, on: stream)
                return self.layer.isOutput
                    ? inputs[3] : try device.zeros([batch.size], on: stream)
            }
        }
        if let feedback {
            if let mirrored { try compose(feedback, of: mirrored, on: stream) }
            // inputs: [e / B, x, logits, h_1, ...]; x + F e = x + B (e / B) Fᵀ.
            let (error, x, logits) = (inputs[0], inputs[1], inputs[2])
            let modulated = try device.allocate([x.rows, x.columns], on: stream)
            try device.copy(x, to: modulated, on: stream)
            let scaled = try device.allocate(error.shape, on: stream)
            try device.axpby(alpha: Float(batch.size), error, beta: 0, scaled, on: stream)
            try device.gemm(
                scaled, feedback.value, transposeB: true, into: modulated, beta: 1, on: stream)
            return try hidden(
                modulated, clean: inputs[3], rest: [error, logits] + inputs.dropFirst(4),
                batch: batch, on: stream, step: step)
        }
        if layer.isOutput {
            // inputs: [h_{L-1}^mod, e / B, logits, losses]. The step needs only the input and
            // the error: (e / B)ᵀ h_{L-1}^mod.
            let pass = LayerPass(input: inputs[0], output: inputs[1], normalized: nil, rstd: nil)
            return StagePass(outputs: [inputs[2]], learn: step(pass, inputs[1]))
        }
        // inputs: [h_{l-1}^mod, e / B, logits, h_l, h_{l+1}, ...].
        return try hidden(
            inputs[0], clean: inputs[3], rest: [inputs[1], inputs[2]] + inputs.dropFirst(4),
            batch: batch, on: stream, step: step)
    }

    /// Weight mirroring's F for this batch: `P = B_1 (B_2 (... B_L))`, the factors rescaled
    /// by `(deviation / std(P))^(1/L)` each and F = `-(deviation / std(P)) P`. The factors
    /// are as the previous batch's mirroring steps left them: each layer's modulated pass
    /// follows its update on its stream, and this pass follows the batch's whole clean pass,
    /// which follows each layer's previous modulated pass.
    private func compose(
        _ feedback: Parameter, of mirrored: (factors: [Parameter], deviation: Float),
        on stream: Stream
    ) throws {
        let device = stream.device
        var product = mirrored.factors.last!.value
        for factor in mirrored.factors.dropLast().reversed() {
            let next = try device.allocate([factor.value.rows, product.columns], on: stream)
            try device.gemm(factor.value, product, into: next, on: stream)
            product = next
        }
        let whole = try device.allocate([1], on: stream)
        let each = try device.allocate([1], on: stream)
        try device.deviationScale(
            of: product, target: mirrored.deviation, sign: -1, into: whole, on: stream)
        try device.deviationScale(
            of: product, target: mirrored.deviation,
            power: 1 / Float(mirrored.factors.count), into: each, on: stream)
        // F first: with one layer, P is that layer's factor. Each tensor is one channel whose
        // `inner` run is the whole tensor: one contiguous loop.
        try device.scaleShiftChannels(
            product, scale: whole, inner: product.count, into: feedback.value, on: stream)
        for factor in mirrored.factors {
            try device.scaleShiftChannels(
                factor.value, scale: each, inner: factor.value.count, into: factor.value,
                on: stream)
        }
    }

    /// A hidden layer's modulated pass from `z`: `h^mod`, and the step from `clean − h^mod`.
    private func hidden(
        _ z: Tensor, clean: Tensor, rest: [Tensor], batch: BatchContext, on stream: Stream,
        step: (LayerPass, Tensor) -> (Stream) throws -> Tensor
    ) throws -> StagePass {
        let device = stream.device
        let (pass, modulated) = try layer.forward(
            z, mask: try layer.mask(batch, rows: batch.size, on: stream), on: stream)
        let difference = try device.allocate(modulated.shape, on: stream)
        try device.copy(clean, to: difference, on: stream)
        try device.axpby(
            alpha: -1 / Float(batch.size), modulated, beta: 1 / Float(batch.size), difference,
            on: stream)
        return StagePass(outputs: [modulated] + rest, learn: step(pass, difference))
    }
}

extension Network {
    /// PEPITA: the angle in degrees between the direction the modulation moves the input, −F,
    /// and `(W_L ⋯ W_1)ᵀ`, the direction backpropagation would carry the error along (the
    /// top-down-feedback paper's alignment): near 90° for an F unrelated to the weights, lower
    /// as they align. nil under other rules, and where the layers sit on several devices.
    /// Computed on the first layer's device, once the layers' streams are idle (between
    /// epochs).
    public func feedbackAngle() throws -> Double? {
        guard let first = pepita.first,
            let feedback = (stages.first { $0 is PEPITAModulatedStage } as? PEPITAModulatedStage)?
                .feedback,
            pepita.allSatisfy({ $0.layer.weight.value.device === first.layer.weight.value.device })
        else { return nil }
        let device = first.layer.weight.value.device
        // M = W_L ⋯ W_1, [K, D0], from the output layer down.
        var product = pepita.last!.layer.weight.value
        for layer in pepita.dropLast().reversed() {
            let next = try device.zeros([product.rows, layer.layer.weight.value.columns])
            try device.gemm(product, layer.layer.weight.value, into: next)
            product = next
        }
        let m = try device.read(product)  // [K, D0]
        let f = try device.read(feedback.value)  // [D0, K]
        let (classes, inputs) = (product.rows, product.columns)
        var (dot, mm, ff) = (0.0, 0.0, 0.0)
        for k in 0..<classes {
            for i in 0..<inputs {
                let (a, b) = (Double(m[k * inputs + i]), -Double(f[i * classes + k]))
                dot += a * b
                mm += a * a
                ff += b * b
            }
        }
        guard mm > 0, ff > 0 else { return 90 }
        return Foundation.acos(max(-1, min(1, dot / (mm * ff).squareRoot()))) * 180 / .pi
    }
}
