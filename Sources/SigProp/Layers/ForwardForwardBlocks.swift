import Foundation

/// A Forward-Forward layer (docs/learning-rules.md): `a = z Wᵀ + b`, `h = relu(a)` on three
/// row sets of each batch, the positives (the input with its label written in), the
/// negatives (with a wrong label) and the neutral rows (every label at 1/K, for the linear
/// readout). The layer learns to give positives a goodness `sum h²` above its threshold and
/// negatives one below, with peer normalisation keeping its units equally active; it hands
/// on each row set normalised to unit root-mean-square, so the next layer cannot read this
/// one's goodness off the length.
public final class ForwardForwardBlock: TrainingStage {
    /// The product and bias; ReLU is applied by the row kernel, whose gradient passes it
    /// unchanged (the reimplementation's straight-through ReLU).
    public let layer: DenseLayer
    public let optimizer: Optimizer
    /// Each unit's running mean activity over positive rows (peer normalisation's state).
    public let runningMean: Parameter
    let settings: ForwardForwardSettings
    /// Whether this is the first layer, which writes the labels into the batch's samples.
    let embedsLabels: Bool
    /// Whether the readouts read this layer: its neutral rows feed the linear classifier and
    /// its goodness the goodness readout (every layer but the first, as in the paper).
    public let isReadout: Bool

    /// Weights normal with deviation 1/sqrt(outputs), biases zero (the reimplementation's).
    init(
        device: Device, name: String, inputs: Int, outputs: Int,
        settings: ForwardForwardSettings, optimizer: OptimizerSettings, embedsLabels: Bool,
        isReadout: Bool, generator: inout SeededGenerator
    ) throws {
        layer = try DenseLayer(
            device: device, name: name, inputs: inputs, outputs: outputs, bias: true,
            activation: .identity, generator: &generator)
        try device.write(
            generator.normal(inputs * outputs, deviation: 1 / Float(outputs).squareRoot()),
            to: layer.weight.value)
        if let bias = layer.bias { try device.fill(bias.value, with: 0) }
        runningMean = try Parameter(
            name: "\(name).running_mean",
            value: device.tensor([Float](repeating: 0.5, count: outputs), shape: [outputs]))
        self.optimizer = try Optimizer(settings: optimizer, parameters: layer.parameters)
        self.settings = settings
        self.embedsLabels = embedsLabels
        self.isReadout = isReadout
    }

    public var optimizers: [Optimizer] { [optimizer] }
    public var buffers: [Parameter] { [runningMean] }

    /// The goodness threshold: `thresholdPerUnit` x the layer's width.
    public var threshold: Float { settings.thresholdPerUnit * Float(layer.outputs) }

    /// Reads the positive-and-negative rows and the neutral rows (the first layer makes them
    /// from the batch), then whatever earlier layers handed on for the classifier; hands on
    /// its own two row sets, then the classifier's inputs with its neutral rows added if it
    /// is a readout layer.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let device = stream.device
        let (rows, width) = (2 * batch.size, layer.outputs)
        let carried = embedsLabels ? [] : Array(inputs.dropFirst(2))
        let pass: LayerPass
        let neutralOut: Tensor
        /// The positives and the negatives' labels where the negatives are derived from them.
        var derived: (positives: Tensor, wrong: [Int])?
        // A GPU at these sizes is bound by launches, not arithmetic: there the products over
        // every row set are one launch less than deriving rows (docs/learning-rules.md).
        if embedsLabels, !device.capabilities.gpu {
            let (pairs, neutral, wrong) = try Self.embedded(batch, on: stream)
            let positives = try device.allocate([batch.size, layer.inputs], on: stream)
            try device.copyRows(pairs, 0..<batch.size, into: positives, at: 0, on: stream)
            let (a, neutralA) = try labelledPreactivations(
                positives, labels: batch.labels.map { Int($0) }, relabelled: [wrong],
                neutral: neutral, classes: batch.classes, on: stream)
            pass = LayerPass(input: pairs, output: a, normalized: nil, rstd: nil)
            neutralOut = try Self.rows(neutralA, on: stream).normalized
            derived = (positives, wrong)
        } else {
            let embedded = embedsLabels ? try Self.embedded(batch, on: stream) : nil
            pass = try layer.forward(embedded?.pairs ?? inputs[0], on: stream)
            neutralOut = try infer(embedded?.neutral ?? inputs[1], on: stream).normalized
        }
        var peer: Tensor?
        if settings.peerWeight != 0 {
            let gradient = try device.allocate([width], on: stream)
            try device.forwardForwardPeer(
                pass.output, positives: batch.size, runningMean: runningMean.value,
                peer: gradient, momentum: settings.peerMomentum, weight: settings.peerWeight,
                on: stream)
            peer = gradient
        }
        let normalized = try device.allocate([rows, width], on: stream)
        let gradient = try device.allocate([rows, width], on: stream)
        let rowLosses = try device.allocate([rows], on: stream)
        try device.forwardForwardRows(
            pass.output, normalized: normalized,
            sumSquares: try device.allocate([rows], on: stream), positives: batch.size,
            threshold: threshold, gradient: gradient, rowLosses: rowLosses, peer: peer,
            on: stream)
        return StagePass(
            outputs: [normalized, neutralOut] + carried + (isReadout ? [neutralOut] : [])
        ) { [derived] stream in
            let step = self.optimizer.beginStep(learningRate: batch.learningRate)
            if let derived, !device.fusesWeightUpdates {
                try self.learnFromPositives(
                    derived.positives, labels: batch.labels.map { Int($0) },
                    wrong: derived.wrong, classes: batch.classes, gradient: gradient,
                    step: step, on: stream)
            } else {
                try self.layer.learn(from: [(pass, gradient)], step: step, on: stream)
            }
            return rowLosses
        }
    }

    /// The first layer's step where its negatives are derived from its positives: a
    /// negative differs from its positive in the label inputs only, so the weight gradient
    /// of both row sets is (g₊ + g₋)ᵀ Z₊, one product over B rows, plus the negatives' share
    /// in the label columns (`Device.forwardForwardRelabelGradient`), where a product over all
    /// 2B rows took twice the multiply-adds (docs/learning-rules.md). `gradient` [2B, N]:
    /// positives, then negatives.
    func learnFromPositives(
        _ positives: Tensor, labels: [Int], wrong: [Int], classes: Int, gradient: Tensor,
        step: UpdateRule, on stream: Stream
    ) throws {
        let bias = try labelledBias
        let (device, count, width) = (positives.device, positives.rows, layer.outputs)
        try device.channelSums(gradient, channels: width, into: bias.gradient, on: stream)
        let summed = try device.allocate([count, width], on: stream)
        let negatives = try device.allocate([count, width], on: stream)
        try device.copyRows(gradient, 0..<count, into: summed, at: 0, on: stream)
        try device.copyRows(gradient, count..<(2 * count), into: negatives, at: 0, on: stream)
        try device.axpby(alpha: 1, negatives, beta: 1, summed, on: stream)
        try device.gemm(
            summed, transposeA: true, positives, into: layer.weight.gradient, on: stream)
        try device.forwardForwardRelabelGradient(
            gradient, inputs: positives, classes: classes,
            rows: labels.indices.map { ($0, labels[$0], wrong[$0]) }, firstRow: count,
            into: layer.weight.gradient, on: stream)
        try step.apply(to: layer.parameters, on: stream)
    }

    /// The bias, which the first layer's derived rows and their gradient read.
    var labelledBias: Parameter {
        get throws {
            guard let bias = layer.bias else {
                throw SigPropError.configuration(
                    "\(layer.weight.name): a Forward-Forward layer has a bias")
            }
            return bias
        }
    }

    /// The layer on rows `z` without learning: the normalised output and each row's goodness.
    func infer(_ z: Tensor, on stream: Stream?) throws -> (normalized: Tensor, goodness: Tensor) {
        try Self.rows(try layer.forward(z, on: stream).output, on: stream)
    }

    /// relu(`a`) normalised to unit root-mean-square per row, and each row's goodness.
    static func rows(_ a: Tensor, on stream: Stream?) throws
        -> (normalized: Tensor, goodness: Tensor)
    {
        let device = a.device
        let normalized = try device.allocate(a.shape, on: stream)
        let goodness = try device.allocate([a.rows], on: stream)
        try device.forwardForwardRows(
            a, normalized: normalized, sumSquares: goodness, on: stream)
        return (normalized, goodness)
    }

    /// The first layer's pre-activations of the unit-RMS rows `labelled` [B, D] (sample b
    /// with label `labels[b]` written in), then of the same samples with each label set of
    /// `relabelled` (set i: sample b with label `relabelled[i][b]`), [(1 + sets) B, N]; and of
    /// their `neutral` rows [B, N]. Only `labelled` goes through the product: the rows differ
    /// in K inputs, so the others take the label's column of W out and another's in
    /// (`Device.forwardForwardRelabel`), which leaves a batch one product over B rows where
    /// its positive, negative and neutral rows were three, and the goodness readout one where
    /// its K labels were K.
    func labelledPreactivations(
        _ labelled: Tensor, labels: [Int], relabelled: [[Int]], neutral: Tensor, classes: Int,
        on stream: Stream?
    ) throws -> (a: Tensor, neutral: Tensor) {
        let bias = try labelledBias
        let device = labelled.device
        let count = labelled.rows
        let first = try layer.forward(labelled, on: stream).output
        let a = try device.allocate([(1 + relabelled.count) * count, layer.outputs], on: stream)
        try device.copyRows(first, 0..<count, into: a, at: 0, on: stream)
        try device.forwardForwardRelabel(
            first, inputs: labelled, weight: layer.weight.value, bias: bias.value,
            classes: classes,
            rows: relabelled.flatMap { set in set.enumerated().map { ($0, labels[$0], $1) } },
            into: a, at: count, on: stream)
        let neutralA = try device.allocate([count, layer.outputs], on: stream)
        try device.forwardForwardRelabel(
            first, inputs: labelled, weight: layer.weight.value, bias: bias.value,
            classes: classes, rows: labels.enumerated().map { ($0, $1, nil) }, neutral: neutral,
            into: neutralA, on: stream)
        return (a, neutralA)
    }

    /// The first layer's inputs: the batch's samples with the true label written over their
    /// first K entries (positives), then with a wrong label drawn uniformly from the others
    /// (negatives; `batch.wrongLabels` where given), both [2B, D]; and with 1/K in each of
    /// those entries (neutral, [B, D]); every row normalised to unit root-mean-square. Also
    /// the wrong labels.
    static func embedded(_ batch: BatchContext, on stream: Stream) throws
        -> (pairs: Tensor, neutral: Tensor, wrong: [Int])
    {
        let (count, classes) = (batch.size, batch.classes)
        let wrong = batch.labels.enumerated().map { row, label in
            batch.wrongLabels.map { Int($0[row]) }
                ?? (Int(label) + Int.random(in: 1..<classes, using: &batch.generator)) % classes
        }
        let pairs = labelled(
            batch.images, count: count, classes: classes,
            labels: batch.labels.map { Int($0) } + wrong)
        let neutral = labelled(
            batch.images, count: count, classes: classes,
            labels: [Int?](repeating: nil, count: count))
        return (
            try normalizedRows(pairs, rows: 2 * count, device: stream.device, on: stream),
            try normalizedRows(neutral, rows: count, device: stream.device, on: stream), wrong
        )
    }

    /// Rows of `count` samples (`images`, flattened) with a label written over their first K
    /// values: row i is sample i mod `count` with onehot(`labels[i]`), or with 1/K in each of
    /// those values where the label is nil (a neutral row).
    static func labelled(_ images: [Float], count: Int, classes: Int, labels: [Int?]) -> [Float] {
        let features = images.count / max(count, 1)
        var rows = [Float](repeating: 0, count: labels.count * features)
        for (row, label) in labels.enumerated() {
            let (start, sample) = (row * features, (row % count) * features)
            for j in 0..<features { rows[start + j] = images[sample + j] }
            for k in 0..<classes {
                rows[start + k] = label.map { k == $0 ? 1 : 0 } ?? 1 / Float(classes)
            }
        }
        return rows
    }

    /// `values` as [rows, D] on `stream`'s device, each row scaled to unit root-mean-square.
    static func normalizedRows(
        _ values: [Float], rows: Int, device: Device, on stream: Stream?
    ) throws -> Tensor {
        let raw = try device.tensor(values, shape: [rows, values.count / rows], on: stream)
        let normalized = try device.allocate(raw.shape, on: stream)
        try device.forwardForwardRows(
            raw, normalized: normalized, sumSquares: try device.allocate([rows], on: stream),
            relu: false, on: stream)
        return normalized
    }
}

/// Forward-Forward's linear readout: a bias-free linear classifier on the normalised neutral
/// rows of the readout layers (concatenated), trained with cross entropy; nothing flows back
/// into the layers. It is split into one part per readout layer (logits = sum of the parts),
/// which is the same linear map without copying the features side by side.
public final class ForwardForwardClassifier: TrainingStage {
    public let parts: [DenseLayer]
    public let optimizer: Optimizer
    /// The classifier's rate over the layers' (it follows their schedule in proportion).
    let rateScale: Float

    /// Zero weights, as the reimplementation's.
    init(
        device: Device, widths: [Int], classes: Int, optimizer: OptimizerSettings,
        settings: ForwardForwardSettings, generator: inout SeededGenerator
    ) throws {
        parts = try widths.enumerated().map { index, width in
            let part = try DenseLayer(
                device: device, name: "classifier.part\(index)", inputs: width,
                outputs: classes, bias: false, activation: .identity, generator: &generator)
            try device.fill(part.weight.value, with: 0)
            return part
        }
        var own = optimizer
        own.learningRate = settings.classifierLearningRate
        own.weightDecay = settings.classifierWeightDecay
        self.optimizer = try Optimizer(settings: own, parameters: parts.flatMap(\.parameters))
        rateScale = settings.classifierLearningRate / optimizer.learningRate
    }

    public var optimizers: [Optimizer] { [optimizer] }

    /// The logits of the readout layers' neutral rows (the parts' outputs summed).
    func logits(_ features: [Tensor], on stream: Stream?) throws -> (Tensor, [LayerPass]) {
        let passes = try zip(parts, features).map { try $0.forward($1, on: stream) }
        guard passes.count > 1 else { return (passes[0].output, passes) }
        let device = passes[0].output.device
        let logits = try device.allocate(passes[0].output.shape, on: stream)
        try device.copy(passes[0].output, to: logits, on: stream)
        for pass in passes.dropFirst() {
            try device.axpby(alpha: 1, pass.output, beta: 1, logits, on: stream)
        }
        return (logits, passes)
    }

    /// Reads the classifier's inputs (after the last layer's two row sets); hands on the
    /// logits (before its step).
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let (logits, passes) = try logits(Array(inputs.dropFirst(2)), on: stream)
        return StagePass(outputs: [logits]) { stream in
            let (dY, rows) = try LocalLoss.crossEntropy(
                logits: logits, onehot: try batch.onehot(on: stream), on: stream)
            let step = self.optimizer.beginStep(
                learningRate: batch.learningRate * self.rateScale)
            for (part, pass) in zip(self.parts, passes) {
                try part.learn(from: [(pass, dY)], step: step, on: stream)
            }
            return rows
        }
    }
}
