/// One block's work on a batch: its outputs on both streams (computed with the weights before
/// its update) and its loss, one share per row (read back later, so the host need not wait).
public struct BlockStep {
    public let h: Tensor
    public let t: Tensor
    /// Y, YY, the mask, the gradients and the row losses of this step's local loss.
    public let loss: LocalLossOutput
    public var rowLosses: Tensor { loss.rowLosses }
}

/// A block's forward on one batch: the outputs the next block reads (after the fixed steps)
/// and what the block's own update needs. Splitting forward from update is what lets the next
/// block start while this one still learns (docs/signal-propagation.md, "When parameters change").
public struct BlockForward {
    /// Outputs on the input and target streams, for the next block.
    public let h: Tensor
    public let t: Tensor
    let hPass: LayerPass
    let tPass: LayerPass
    /// T as the loss sees it (the signal block's context output, shaped like H).
    let lossTarget: Tensor
    /// The previous target stream T0, and the one-hot labels with the K-row shortcut.
    let t0: Tensor
    let labels: Tensor?
    /// With the K-row shortcut, the one-hot labels of the samples each row is compared with
    /// when they are not the rows' own (a rank's share of a batch against the whole batch).
    var columnLabels: Tensor? = nil
}

/// Random dropout masks for one batch, drawn on the host from the run's seeded generator (so
/// a resumed run draws the same masks).
public final class DropoutMasks {
    var generator: SeededGenerator
    public init(generator: SeededGenerator) { self.generator = generator }

    /// Entries 0 with probability `p`, else 1 / (1 - p) (inverted dropout, as PyTorch).
    func mask(_ shape: [Int], p: Float, device: Device, on stream: Stream?) throws -> Tensor {
        let keep = 1 / (1 - p)
        let values = (0..<shape.reduce(1, *)).map { _ in
            Float.random(in: 0..<1, using: &generator) < p ? 0 : keep
        }
        return try device.tensor(values, shape: shape, on: stream)
    }
}

/// A fixed, non-learning step between blocks (after the block's loss: no gradient crosses it).
enum FixedStep: Sendable, Equatable {
    /// Max or average pooling over non-overlapping `size` x `size` windows; with `ceil` a
    /// partial window at the edge is pooled rather than dropped.
    case pool(PoolKind, size: Int, ceil: Bool = false)
    case flatten
    /// Zeroes each entry with this probability during training (each stream its own mask);
    /// identity at inference.
    case dropout(Float)

    func apply(_ x: Tensor, dropout masks: DropoutMasks?, on stream: Stream?) throws -> Tensor {
        switch self {
        case .dropout(let p):
            guard let masks, p > 0 else { return x }
            let out = try x.device.allocate(x.shape, on: stream)
            try x.device.multiply(
                x, try masks.mask(x.shape, p: p, device: x.device, on: stream), into: out,
                on: stream)
            return out
        case .flatten:
            return try x.reshaped([x.rows, x.columns])
        case .pool(let kind, let size, let ceil):
            let out = try x.device.allocate(try outputShape(for: x.shape), on: stream)
            try x.device.pool2d(kind, x, size: size, ceil: ceil, into: out, on: stream)
            return out
        }
    }

    func outputShape(for input: [Int]) throws -> [Int] {
        switch self {
        case .dropout:
            return input
        case .flatten:
            return [input.first ?? 1, input.dropFirst().reduce(1, *)]
        case .pool(_, let size, let ceil):
            guard input.count == 4, input[2] >= size, input[3] >= size else {
                throw SigPropError.shapeMismatch(
                    operation: "pool",
                    detail:
                        "\(size)x\(size) pooling needs NCHW activations of at least that size, "
                        + "got \(input)")
            }
            return [
                input[0], input[1], PoolShape.outputLength(input[2], size: size, ceil: ceil),
                PoolShape.outputLength(input[3], size: size, ceil: ceil),
            ]
        }
    }
}

extension Array where Element == FixedStep {
    /// The steps in order (a block's `after`), dropout only where masks are given (training).
    func apply(to x: Tensor, dropout: DropoutMasks?, on stream: Stream?) throws -> Tensor {
        try reduce(x) { try $1.apply($0, dropout: dropout, on: stream) }
    }
}

/// The signal block: an input part `g` on x and a context part `p` (dense K -> g's output
/// shape, layer norm, ReLU, no bias) on onehot(c); one loss with T0 = onehot(c), one optimizer
/// over both parts.
public final class SignalBlock {
    public let input: FeatureLayer
    public let context: DenseLayer
    let after: [FixedStep]
    public let optimizer: Optimizer
    let outputShape: [Int]

    /// A `fixedContext` keeps the context projection at its random initial values (the
    /// non-learned projection option); only the input part learns.
    init(
        input: FeatureLayer, context: DenseLayer, after: [FixedStep], outputShape: [Int],
        optimizer: OptimizerSettings,
        fixedContext: Bool = false
    ) throws {
        self.input = input
        self.context = context
        self.after = after
        self.outputShape = outputShape
        self.fixedContext = fixedContext
        self.optimizer = try Optimizer(
            settings: optimizer,
            parameters: input.parameters + (fixedContext ? [] : context.parameters))
    }

    public let fixedContext: Bool

    /// t1 = p(onehot), shaped like g's output.
    func target(_ onehot: Tensor, on stream: Stream?) throws -> (LayerPass, Tensor) {
        let pass = try context.forward(onehot, on: stream)
        return (pass, try pass.output.reshaped([onehot.rows] + outputShape.dropFirst()))
    }

    /// `context` is onehot(c) (B rows), or with the K-row shortcut the K x K identity, with
    /// `labels` = onehot(c) to expand it.
    public func forward(
        x: Tensor, context onehot: Tensor, labels: Tensor? = nil, dropout: DropoutMasks? = nil,
        on stream: Stream?
    ) throws -> BlockForward {
        let hPass = try input.forward(x, on: stream)
        let (tPass, t) = try target(onehot, on: stream)
        return BlockForward(
            h: try after.apply(to: hPass.output, dropout: dropout, on: stream),
            t: try after.apply(to: t, dropout: dropout, on: stream),
            hPass: hPass, tPass: tPass, lossTarget: t, t0: onehot, labels: labels)
    }

    /// The forward of the target stream only, beside an input stream already through the
    /// block with the same weights (`first`: Error Forward-Propagation's first pass).
    func forward(
        reusing first: ErrorFirstPassOutput, context onehot: Tensor, dropout: DropoutMasks?,
        on stream: Stream?
    ) throws -> BlockForward {
        let (tPass, t) = try target(onehot, on: stream)
        return BlockForward(
            h: first.h, t: try after.apply(to: t, dropout: dropout, on: stream),
            hPass: first.pass, tPass: tPass, lossTarget: t, t0: onehot, labels: nil)
    }

    /// The block's loss on `pass`, its gradients and one optimizer step. The step works in
    /// the storage of the returned `dH` and `dT`: read the loss, not them.
    public func learn(
        _ pass: BlockForward, loss: LocalLoss, learningRate: Float, on stream: Stream?
    ) throws -> LocalLossOutput {
        let out = try loss.evaluate(
            h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0, labels: pass.labels,
            columns: pass.columnLabels, on: stream)
        try step(pass, out, learningRate: learningRate, on: stream)
        return out
    }

    /// One optimizer step of both parts from the loss's gradients.
    private func step(
        _ pass: BlockForward, _ out: LocalLossOutput, learningRate: Float, on stream: Stream?
    ) throws {
        let step = optimizer.beginStep(learningRate: learningRate)
        // The loss's gradients serve this step only: the layers may work in their storage.
        try input.learn(
            from: [(pass.hPass, out.dH)], step: step, overwritingGradients: true, on: stream)
        if !fixedContext {
            try context.learn(
                from: [(pass.tPass, try out.dT.reshaped(pass.tPass.output.shape))], step: step,
                overwritingGradients: true, on: stream)
        }
    }

    /// Forward and update on one stream. `storingGradients` also leaves d loss / d every
    /// parameter in its gradient tensor (for checks: training steps dense weights inside their
    /// gradient products and never stores those).
    public func train(
        x: Tensor, context onehot: Tensor, labels: Tensor? = nil, loss: LocalLoss,
        learningRate: Float,
        dropout: DropoutMasks? = nil, storingGradients: Bool = false, on stream: Stream?
    ) throws -> BlockStep {
        let pass = try forward(x: x, context: onehot, labels: labels, dropout: dropout, on: stream)
        guard storingGradients else {
            return BlockStep(
                h: pass.h, t: pass.t,
                loss: try learn(pass, loss: loss, learningRate: learningRate, on: stream))
        }
        let out = try loss.evaluate(
            h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0, labels: pass.labels, on: stream)
        try input.accumulateGradients(
            pass.hPass, outputGradient: out.dH, accumulate: false, on: stream)
        try context.accumulateGradients(
            pass.tPass, outputGradient: try out.dT.reshaped(pass.tPass.output.shape),
            accumulate: false, on: stream)
        try step(pass, out, learningRate: learningRate, on: stream)
        return BlockStep(h: pass.h, t: pass.t, loss: out)
    }

    public func infer(_ x: Tensor, on stream: Stream?) throws -> Tensor {
        try after.apply(to: try input.forward(x, on: stream).output, dropout: nil, on: stream)
    }

    public func inferTarget(_ onehot: Tensor, on stream: Stream?) throws -> Tensor {
        try after.apply(to: try target(onehot, on: stream).1, dropout: nil, on: stream)
    }
}

/// A hidden block: the same f, with the same weights, on both streams; loss with T0 = the
/// previous block's target stream; its own optimizer. Fixed steps (pooling, flatten) follow.
public final class HiddenBlock {
    public let layer: FeatureLayer
    let after: [FixedStep]
    public let optimizer: Optimizer

    init(layer: FeatureLayer, after: [FixedStep], optimizer: OptimizerSettings) throws {
        self.layer = layer
        self.after = after
        self.optimizer = try Optimizer(settings: optimizer, parameters: layer.parameters)
    }

    /// With `labels` (onehot(c)), `t` holds one row per class (the K-row shortcut).
    public func forward(
        h: Tensor, t: Tensor, labels: Tensor? = nil, dropout: DropoutMasks? = nil,
        on stream: Stream?
    ) throws -> BlockForward {
        let hPass = try layer.forward(h, on: stream)
        let tPass = try layer.forward(t, on: stream)
        return BlockForward(
            h: try after.apply(to: hPass.output, dropout: dropout, on: stream),
            t: try after.apply(to: tPass.output, dropout: dropout, on: stream),
            hPass: hPass, tPass: tPass, lossTarget: tPass.output, t0: t, labels: labels)
    }

    /// The forward of the target stream `t` only, beside an input stream already through the
    /// block with the same weights (`first`: Error Forward-Propagation's first pass).
    func forward(
        reusing first: ErrorFirstPassOutput, t: Tensor, dropout: DropoutMasks?, on stream: Stream?
    ) throws -> BlockForward {
        let tPass = try layer.forward(t, on: stream)
        return BlockForward(
            h: first.h, t: try after.apply(to: tPass.output, dropout: dropout, on: stream),
            hPass: first.pass, tPass: tPass, lossTarget: tPass.output, t0: t, labels: nil)
    }

    /// The block's loss on `pass`, its gradients (from both streams) and one optimizer step.
    /// The step works in the storage of the returned `dH` and `dT`: read the loss, not them.
    public func learn(
        _ pass: BlockForward, loss: LocalLoss, learningRate: Float, on stream: Stream?
    ) throws -> LocalLossOutput {
        let out = try loss.evaluate(
            h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0, labels: pass.labels,
            columns: pass.columnLabels, on: stream)
        try step(pass, out, learningRate: learningRate, on: stream)
        return out
    }

    /// One optimizer step from the loss's gradients on both streams.
    private func step(
        _ pass: BlockForward, _ out: LocalLossOutput, learningRate: Float, on stream: Stream?
    ) throws {
        // The loss's gradients serve this step only: the layer may work in their storage.
        try layer.learn(
            from: [(pass.hPass, out.dH), (pass.tPass, out.dT)],
            step: optimizer.beginStep(learningRate: learningRate), overwritingGradients: true,
            on: stream)
    }

    /// Forward and update on one stream; `storingGradients` as in `SignalBlock.train`.
    public func train(
        h: Tensor, t: Tensor, labels: Tensor? = nil, loss: LocalLoss, learningRate: Float,
        dropout: DropoutMasks? = nil, storingGradients: Bool = false, on stream: Stream?
    ) throws -> BlockStep {
        let pass = try forward(h: h, t: t, labels: labels, dropout: dropout, on: stream)
        guard storingGradients else {
            return BlockStep(
                h: pass.h, t: pass.t,
                loss: try learn(pass, loss: loss, learningRate: learningRate, on: stream))
        }
        let out = try loss.evaluate(
            h: pass.hPass.output, t: pass.lossTarget, t0: pass.t0, labels: pass.labels, on: stream)
        try layer.accumulateGradients(
            pass.hPass, outputGradient: out.dH, accumulate: false, on: stream)
        try layer.accumulateGradients(
            pass.tPass, outputGradient: out.dT, accumulate: true, on: stream)
        try step(pass, out, learningRate: learningRate, on: stream)
        return BlockStep(h: pass.h, t: pass.t, loss: out)
    }

    public func infer(_ x: Tensor, on stream: Stream?) throws -> Tensor {
        try after.apply(to: try layer.forward(x, on: stream).output, dropout: nil, on: stream)
    }
}

/// The K-way classifier on the last block's (flattened) output, trained with ordinary cross
/// entropy; its input is a constant.
public final class OutputLayer {
    public let layer: DenseLayer
    public let optimizer: Optimizer

    init(layer: DenseLayer, optimizer: OptimizerSettings) throws {
        self.layer = layer
        self.optimizer = try Optimizer(settings: optimizer, parameters: layer.parameters)
    }

    public func logits(_ h: Tensor, on stream: Stream?) throws -> Tensor {
        try layer.forward(try h.reshaped([h.rows, h.columns]), on: stream).output
    }

    /// One cross-entropy step from `pass` (the logits' forward); returns the per-row losses.
    func learn(_ pass: LayerPass, onehot: Tensor, learningRate: Float, on stream: Stream?) throws
        -> Tensor
    {
        let (dY, rows) = try LocalLoss.crossEntropy(
            logits: pass.output, onehot: onehot, on: stream)
        try layer.learn(
            from: [(pass, dY)], step: optimizer.beginStep(learningRate: learningRate), on: stream)
        return rows
    }
}

extension SignalBlock: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    /// Reads the batch's samples; the context is onehot(c), or the K x K identity with the
    /// K-row shortcut. Hands on the input and target streams.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let x = try batch.samples(on: stream)
        let context = try BatchContext.onehot(
            batch.byClass ? (0..<batch.classes).map(Int32.init) : batch.labels,
            classes: batch.classes, device: stream.device, on: stream)
        var pass = try forward(
            x: x, context: context, labels: batch.byClass ? try batch.onehot(on: stream) : nil,
            dropout: batch.dropout, on: stream)
        pass.columnLabels = try batch.columnOnehot(on: stream)
        return StagePass(outputs: [pass.h, pass.t]) { stream in
            try self.learn(
                pass, loss: batch.loss, learningRate: batch.learningRate, on: stream
            ).rowLosses
        }
    }
}

extension HiddenBlock: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    /// Reads the previous block's input and target streams; hands on its own.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        var pass = try forward(
            h: inputs[0], t: inputs[1],
            labels: batch.byClass ? try batch.onehot(on: stream) : nil, dropout: batch.dropout,
            on: stream)
        pass.columnLabels = try batch.columnOnehot(on: stream)
        return StagePass(outputs: [pass.h, pass.t]) { stream in
            try self.learn(
                pass, loss: batch.loss, learningRate: batch.learningRate, on: stream
            ).rowLosses
        }
    }
}

extension OutputLayer: TrainingStage {
    public var optimizers: [Optimizer] { [optimizer] }

    /// Reads the last block's input stream; hands on the logits (before its step).
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let h = inputs[0]
        let pass = try layer.forward(try h.reshaped([h.rows, h.columns]), on: stream)
        return StagePass(outputs: [pass.output]) { stream in
            try self.learn(
                pass, onehot: try batch.onehot(on: stream), learningRate: batch.learningRate,
                on: stream)
        }
    }
}
