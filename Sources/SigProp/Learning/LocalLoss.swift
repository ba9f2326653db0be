/// Everything one evaluation of a block's local loss produces (all on the block's device).
public struct LocalLossOutput {
    /// `Y = flat(H) flat(T)ᵀ / P` and `YY = flat(T0) flat(T0)ᵀ / P0`, B x B.
    public let y: Tensor
    public let yy: Tensor
    /// The target mask M from YY, B x B, entries 0 or 1.
    public let mask: Tensor
    /// d loss / d Y, B x B.
    public let dY: Tensor
    /// Row i's share of the loss; the loss is their sum.
    public let rowLosses: Tensor
    /// d loss / d H and d loss / d T, shaped like H and T (T's K rows with the K-row shortcut).
    public let dH: Tensor
    public let dT: Tensor
}

/// The local loss of docs/signal-propagation.md ("input-target, max-all" by default): compares the
/// block's outputs on the input stream H with its outputs on the target stream T, with targets from
/// the previous target stream T0. 4-D activations `[B, C, H, W]` are flattened to `[B, C*H*W]` and
/// the products divided by P = H*W: the mean over positions of the per-position products, as the
/// reference forms it.
public struct LocalLoss: Sendable {
    public var kind: LocalLossKind

    public init(kind: LocalLossKind = .maxAll) { self.kind = kind }

    /// Positions per channel: H*W for 4-D activations, else 1.
    static func positions(_ tensor: Tensor) -> Int {
        tensor.shape.count == 4 ? tensor.shape[2] * tensor.shape[3] : 1
    }

    /// With `labels` (the batch's one-hot rows, B x K), `t` and `t0` hold one row per class (the
    /// K-row shortcut of docs/signal-propagation.md): `Y = (H T_Kᵀ) onehotᵀ`, `YY = onehot (T0_K
    /// T0_Kᵀ) onehotᵀ`, and `dT` comes back per class, `dT_K = (dY onehot)ᵀ H`. Rows of one label
    /// then have bit-identical YY entries, so the max-all ties are exact. `columns` (one-hot
    /// rows, C x K) compares each row with other samples than the rows themselves: Y and YY are
    /// then B x C. A rank training on a share of a batch passes the whole batch's, so that its
    /// rows' losses and gradients are those of the whole batch's rows, up to the 1/B factor
    /// (here 1/its rows).
    public func evaluate(
        h: Tensor, t: Tensor, t0: Tensor, labels: Tensor? = nil, columns: Tensor? = nil,
        on stream: Stream? = nil
    ) throws -> LocalLossOutput {
        if let labels {
            return try evaluateByClass(
                h: h, t: t, t0: t0, labels: labels, columns: columns ?? labels, on: stream)
        }
        let device = h.device
        guard h.shape == t.shape else {
            throw SigPropError.shapeMismatch(
                operation: "LocalLoss",
                detail:
                    "H \(h.shape) and T \(t.shape) must have the same shape (one target row per "
                    + "sample)"
            )
        }
        guard t0.rows == h.rows else {
            throw SigPropError.shapeMismatch(
                operation: "LocalLoss",
                detail: "T0 \(t0.shape) must have \(h.rows) rows like H \(h.shape)")
        }
        let batch = h.rows
        let scale = 1 / Float(Self.positions(h))
        // Every output is written whole (products with beta 0, which never read C, and the row
        // kernel), so none is zero-filled first: on a GPU each fill is a launch.
        let y = try device.allocate([batch, batch], on: stream)
        let yy = try device.allocate([batch, batch], on: stream)
        let mask = try device.allocate([batch, batch], on: stream)
        let dY = try device.allocate([batch, batch], on: stream)
        let rowLosses = try device.allocate([batch], on: stream)
        let dH = try device.allocate(h.shape, on: stream)
        let dT = try device.allocate(t.shape, on: stream)
        try device.gemm(h, t, transposeB: true, into: y, alpha: scale, on: stream)
        try device.gemm(
            t0, t0, transposeB: true, into: yy, alpha: 1 / Float(Self.positions(t0)), on: stream)
        try device.localLossRows(
            kind, y: y, yy: yy, mask: mask, dY: dY, rowLosses: rowLosses, on: stream)
        try device.gemm(dY, t, into: dH, alpha: scale, on: stream)
        try device.gemm(dY, transposeA: true, h, into: dT, alpha: scale, on: stream)
        return LocalLossOutput(
            y: y, yy: yy, mask: mask, dY: dY, rowLosses: rowLosses, dH: dH, dT: dT)
    }

    func evaluateByClass(
        h: Tensor, t: Tensor, t0: Tensor, labels: Tensor, columns: Tensor, on stream: Stream?
    ) throws -> LocalLossOutput {
        let device = h.device
        let batch = h.rows
        let compared = columns.rows
        let classes = labels.columns
        guard labels.rows == batch, columns.columns == classes, t.rows == classes,
            t0.rows == classes,
            Array(h.shape.dropFirst()) == Array(t.shape.dropFirst())
        else {
            throw SigPropError.shapeMismatch(
                operation: "LocalLoss (K-row shortcut)",
                detail:
                    "H \(h.shape), one-hot labels \(labels.shape) and \(columns.shape), T "
                    + "\(t.shape) and T0 \(t0.shape): T and T0 need one row per class"
            )
        }
        let scale = 1 / Float(Self.positions(h))
        let yByClass = try device.allocate([batch, classes], on: stream)
        let y = try device.allocate([batch, compared], on: stream)
        try device.gemm(h, t, transposeB: true, into: yByClass, alpha: scale, on: stream)
        try device.gemm(yByClass, columns, transposeB: true, into: y, on: stream)
        let yyByClass = try device.allocate([classes, classes], on: stream)
        let yyRows = try device.allocate([batch, classes], on: stream)
        let yy = try device.allocate([batch, compared], on: stream)
        try device.gemm(
            t0, t0, transposeB: true, into: yyByClass, alpha: 1 / Float(Self.positions(t0)),
            on: stream)
        try device.gemm(labels, yyByClass, into: yyRows, on: stream)
        try device.gemm(yyRows, columns, transposeB: true, into: yy, on: stream)
        let mask = try device.allocate([batch, compared], on: stream)
        let dY = try device.allocate([batch, compared], on: stream)
        let rowLosses = try device.allocate([batch], on: stream)
        try device.localLossRows(
            kind, y: y, yy: yy, mask: mask, dY: dY, rowLosses: rowLosses, on: stream)
        let dYByClass = try device.allocate([batch, classes], on: stream)
        try device.gemm(dY, columns, into: dYByClass, on: stream)
        let dH = try device.allocate(h.shape, on: stream)
        let dT = try device.allocate(t.shape, on: stream)
        try device.gemm(dYByClass, t, into: dH, alpha: scale, on: stream)
        try device.gemm(dYByClass, transposeA: true, h, into: dT, alpha: scale, on: stream)
        return LocalLossOutput(
            y: y, yy: yy, mask: mask, dY: dY, rowLosses: rowLosses, dH: dH, dT: dT)
    }

    /// Cross entropy of `logits` [B, K] against one-hot rows: the local loss's row rule with
    /// M = onehot, m_i = 1. Returns d loss / d logits, (softmax − onehot) / B, and each row's
    /// share of the mean loss.
    public static func crossEntropy(logits: Tensor, onehot: Tensor, on stream: Stream?) throws
        -> (gradient: Tensor, rowLosses: Tensor)
    {
        let device = logits.device
        let mask = try device.allocate(logits.shape, on: stream)
        let gradient = try device.allocate(logits.shape, on: stream)
        let rows = try device.allocate([logits.rows], on: stream)
        try device.localLossRows(
            .maxAll, y: logits, yy: onehot, mask: mask, dY: gradient, rowLosses: rows,
            on: stream)
        return (gradient, rows)
    }

    /// The loss value: the sum of the row shares (read back to the host).
    public static func value(of output: LocalLossOutput, on stream: Stream? = nil) throws -> Float {
        try output.rowLosses.device.read(output.rowLosses, on: stream).reduce(0, +)
    }
}
