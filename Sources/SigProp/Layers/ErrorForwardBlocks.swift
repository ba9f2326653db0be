/// Error Forward-Propagation (docs/learning-rules.md) runs Signal Propagation's blocks twice
/// per batch. The first pass gives the output; the error of that output,
/// `e = softmax(logits) − onehot(c)`, takes onehot(c)'s place as the signal block's context in
/// the second pass, whose blocks learn with their local losses (the signal block's with
/// `T0 = e`) and whose output layer learns with cross entropy, as under Signal Propagation.
/// Both passes of a block run on the block's stream, so a batch's second pass follows its
/// first, and the next batch's first pass follows this batch's update.
///
/// With the first pass that only predicts, nothing learns between a block's two passes, so the
/// input stream would come out of the second pass as it came out of the first: the second
/// pass reuses it (`ErrorFirstPassOutput`) and runs the target stream alone.

/// A block's input stream through the first pass: the layer's pass (what the block's update
/// reads) and its output after the block's fixed steps (what the next block reads).
struct ErrorFirstPassOutput {
    let pass: LayerPass
    let h: Tensor

    /// Where a block's first pass leaves this for its second pass (`BatchContext.shared`).
    static func key(_ layer: any FeatureLayer) -> String {
        "\(layer.parameters[0].name).first-pass"
    }

    static func take(_ layer: any FeatureLayer, from batch: BatchContext) throws -> Self {
        guard let first = batch.shared.removeValue(forKey: key(layer)) as? Self else {
            throw SigPropError.configuration(
                "Error Forward-Propagation's second pass of \(layer.parameters[0].name) found "
                    + "no first pass of its batch")
        }
        return first
    }
}

/// A block in the first pass without the target (`ErrorFirstPass.predict`): the input
/// stream only, through the weights as they are; nothing learns. Hands on `[h]`, the output
/// layer `[logits]`. With `keepsPass`, leaves its pass for the block's second pass.
public final class ErrorForwardPredictStage: TrainingStage {
    public enum Block {
        case signal(SignalBlock)
        case hidden(HiddenBlock)
        case output(OutputLayer)
    }

    public let block: Block
    let keepsPass: Bool

    init(_ block: Block, keepsPass: Bool) {
        self.block = block
        self.keepsPass = keepsPass
    }

    public var optimizers: [Optimizer] { [] }
    public var reportsLoss: Bool { false }

    /// Dropout draws its own masks here, as a module in training mode does on every call.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let (layer, pass, output): (any FeatureLayer, LayerPass, Tensor)
        switch block {
        case .signal(let signal):
            (layer, pass) = (
                signal.input, try signal.input.forward(try batch.samples(on: stream), on: stream)
            )
            output = try signal.after.apply(to: pass.output, dropout: batch.dropout, on: stream)
        case .hidden(let hidden):
            (layer, pass) = (hidden.layer, try hidden.layer.forward(inputs[0], on: stream))
            output = try hidden.after.apply(to: pass.output, dropout: batch.dropout, on: stream)
        case .output(let outputLayer):
            let h = inputs[0]
            (layer, pass) = (
                outputLayer.layer,
                try outputLayer.layer.forward(try h.reshaped([h.rows, h.columns]), on: stream)
            )
            output = pass.output
        }
        if keepsPass {
            batch.shared[ErrorFirstPassOutput.key(layer)] = ErrorFirstPassOutput(
                pass: pass, h: output)
        }
        let rows = try stream.device.zeros([batch.size], on: stream)
        return StagePass(outputs: [output]) { _ in rows }
    }
}

/// The signal block in the second pass: reads the first pass's logits, and runs with the
/// error of their prediction as its context (one row per sample, so no K-row shortcut).
/// With `reusesFirstPass` it takes its input stream from the first pass and hands on the
/// target stream only; otherwise the input and target streams, as under Signal Propagation.
public final class ErrorForwardSignalStage: TrainingStage {
    public let signal: SignalBlock
    let reusesFirstPass: Bool

    init(_ signal: SignalBlock, reusesFirstPass: Bool) {
        self.signal = signal
        self.reusesFirstPass = reusesFirstPass
    }

    public var optimizers: [Optimizer] { signal.optimizers }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let device = stream.device
        // Cross entropy's gradient by the logits is e / B.
        let (scaled, _) = try LocalLoss.crossEntropy(
            logits: inputs[0], onehot: try batch.onehot(on: stream), on: stream)
        let error = try device.allocate(scaled.shape, on: stream)
        try device.axpby(alpha: Float(batch.size), scaled, beta: 0, error, on: stream)
        let pass =
            reusesFirstPass
            ? try signal.forward(
                reusing: try ErrorFirstPassOutput.take(signal.input, from: batch), context: error,
                dropout: batch.dropout, on: stream)
            : try signal.forward(
                x: try batch.samples(on: stream), context: error, dropout: batch.dropout,
                on: stream)
        return StagePass(outputs: reusesFirstPass ? [pass.t] : [pass.h, pass.t]) { stream in
            try self.signal.learn(
                pass, loss: batch.loss, learningRate: batch.learningRate, on: stream
            ).rowLosses
        }
    }
}

/// A hidden block in the second pass: its target stream is the output error's, one row per
/// sample whatever the first pass's target stream held (`BatchContext.byClass`). With
/// `reusesFirstPass` (after the first pass that only predicts) its input stream is the first
/// pass's, and it reads and hands on the target stream only; otherwise both streams.
public final class ErrorForwardHiddenStage: TrainingStage {
    public let hidden: HiddenBlock
    let reusesFirstPass: Bool

    init(_ hidden: HiddenBlock, reusesFirstPass: Bool) {
        self.hidden = hidden
        self.reusesFirstPass = reusesFirstPass
    }

    public var optimizers: [Optimizer] { hidden.optimizers }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let pass =
            reusesFirstPass
            ? try hidden.forward(
                reusing: try ErrorFirstPassOutput.take(hidden.layer, from: batch), t: inputs[0],
                dropout: batch.dropout, on: stream)
            : try hidden.forward(h: inputs[0], t: inputs[1], dropout: batch.dropout, on: stream)
        return StagePass(outputs: reusesFirstPass ? [pass.t] : [pass.h, pass.t]) { stream in
            try self.hidden.learn(
                pass, loss: batch.loss, learningRate: batch.learningRate, on: stream
            ).rowLosses
        }
    }
}

/// The output layer in the second pass after the first pass that only predicts: its logits
/// are the first pass's; learns with their cross entropy.
public final class ErrorForwardOutputStage: TrainingStage {
    public let output: OutputLayer

    init(_ output: OutputLayer) { self.output = output }

    public var optimizers: [Optimizer] { output.optimizers }

    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let first = try ErrorFirstPassOutput.take(output.layer, from: batch)
        return StagePass(outputs: [first.h]) { stream in
            try self.output.learn(
                first.pass, onehot: try batch.onehot(on: stream),
                learningRate: batch.learningRate, on: stream)
        }
    }
}
