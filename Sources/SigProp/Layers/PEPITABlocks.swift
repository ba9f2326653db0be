import Foundation

/// One layer of a PEPITA network (docs/learning-rules.md): `h = relu(W z)` (the output layer:
/// `W z`, the logits), no bias. It runs twice per batch, as two stages on one stream: the
/// clean pass, and the modulated pass that learns from the difference of the two.
public final class PEPITALayer {
    /// The product; ReLU is applied beside it, since PEPITA's update takes no derivative.
    public let layer: DenseLayer
    public let optimizer: Optimizer
    public let isOutput: Bool
    /// The probability that dropout zeroes a unit in training; one mask per batch serves both
    /// passes, so the two passes compare the same units.
    public let dropout: Float
    /// Where the clean pass leaves its mask for the modulated pass of the same batch.
    var maskKey: String { "\(layer.weight.name).dropout" }

    /// Weights uniform in ±sqrt(6 / inputs) (He-uniform, as the authors' code).
    init(
        device: Device, name: String, inputs: Int, outputs: Int, isOutput: Bool, dropout: Float,
        optimizer: OptimizerSettings, generator: inout SeededGenerator
    ) throws {
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
    /// The first layer's fixed projection of the error onto the input, [D0, K].
    public let feedback: Parameter?

    init(layer: PEPITALayer, feedback: Parameter?) {
        self.layer = layer
        self.feedback = feedback
    }

    public var optimizers: [Optimizer] { [layer.optimizer] }
    public var buffers: [Parameter] { feedback.map { [$0] } ?? [] }
    /// The output layer's pass reports the cross entropy; the hidden layers have no loss.
    public var reportsLoss: Bool { layer.isOutput }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let device = stream.device
        let step = { (pass: LayerPass, gradient: Tensor) in
            { (stream: Stream) throws -> Tensor in
                try self.layer.layer.learn(
                    from: [(pass, gradient)],
                    step: self.layer.optimizer.beginStep(learningRate: batch.learningRate),
                    on: stream)
                return self.layer.isOutput
                    ? inputs[3] : try device.zeros([batch.size], on: stream)
            }
        }
        if let feedback {
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
