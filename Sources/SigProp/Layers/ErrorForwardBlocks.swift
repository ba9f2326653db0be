/// Error Forward-Propagation (docs/learning-rules.md) runs Signal Propagation's blocks twice
/// per batch. The first pass gives the output; the error of that output,
/// `e = softmax(logits) − onehot(c)`, takes onehot(c)'s place as the signal block's context in
/// the second pass, whose blocks learn with their local losses (the signal block's with
/// `T0 = e`) and whose output layer learns with cross entropy, as under Signal Propagation.
/// Both passes of a block run on the block's stream, so a batch's second pass follows its
/// first, and the next batch's first pass follows this batch's update.

/// A block in the first pass without the target (`ErrorFirstPass.predict`): the input
/// stream only, through the weights as they are; nothing learns. Hands on `[h]`, the output
/// layer `[logits]`.
public final class ErrorForwardPredictStage: TrainingStage {
    public enum Block {
        case signal(SignalBlock)
        case hidden(HiddenBlock)
        case output(OutputLayer)
    }

    public let block: Block

    init(_ block: Block) { self.block = block }

    public var optimizers: [Optimizer] { [] }
    public var reportsLoss: Bool { false }

    /// Dropout draws its own masks here, as a module in training mode does on every call.
    public func forward(_ inputs: [Tensor], batch: BatchContext, on stream: Stream) throws
        -> StagePass
    {
        let output: Tensor
        switch block {
        case .signal(let signal):
            let x = try batch.samples(on: stream)
            output = try signal.after.apply(
                to: try signal.input.forward(x, on: stream).output, dropout: batch.dropout,
                on: stream)
        case .hidden(let hidden):
            output = try hidden.after.apply(
                to: try hidden.layer.forward(inputs[0], on: stream).output,
                dropout: batch.dropout, on: stream)
        case .output(let layer):
            output = try layer.logits(inputs[0], on: stream)
        }
        let rows = try stream.device.zeros([batch.size], on: stream)
        return StagePass(outputs: [output]) { _ in rows }
    }
}

/// The signal block in the second pass: reads the first pass's logits, and runs with the
/// error of their prediction as its context (one row per sample, so no K-row shortcut).
/// Hands on the input and target streams, as under Signal Propagation.
public final class ErrorForwardSignalStage: TrainingStage {
    public let signal: SignalBlock

    init(_ signal: SignalBlock) { self.signal = signal }

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
        let pass = try signal.forward(
            x: try batch.samples(on: stream), context: error, dropout: batch.dropout,
            on: stream)
        return StagePass(outputs: [pass.h, pass.t]) { stream in
            try self.signal.learn(
                pass, loss: batch.loss, learningRate: batch.learningRate, on: stream
            ).rowLosses
        }
    }
}
