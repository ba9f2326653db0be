/// The shape of one Forward-Forward row pass (Kernels/forward_forward.cl).
struct ForwardForwardRowShape: Sendable {
    var rows: Int
    var columns: Int
    /// Rows with a loss: the first `positives` against 1, the rest up to `lossRows` against 0.
    var positives: Int
    var lossRows: Int
    var threshold: Float
    var relu: Bool
    var epsilon: Float
}

/// The shape of one Forward-Forward relabelling (Kernels/forward_forward.cl's ff_relabel).
struct ForwardForwardRelabelShape: Sendable {
    /// The layer's outputs N and inputs D, and the classes K whose labels are its first K inputs.
    var units: Int
    var inputs: Int
    var classes: Int
    /// The plan's rows, and the first row of the tensor they stand at: the output's
    /// (`ff_relabel`) or the gradient's (`ff_relabel_gradient`).
    var rows: Int
    var firstRow: Int
}

extension Device {
    /// Forward-Forward's fused row pass over `a` [N, D] (a layer's pre-activations, or with
    /// `relu` false any rows to normalise): h = relu(a), each row's sum of squares (its
    /// goodness) into `sumSquares` [N] and h / (sqrt(ss / D) + `epsilon`) into `normalized`.
    /// With a `gradient` [L, D] and `rowLosses` [L] (L = `positives` + negatives rows first
    /// in `a`), also the logistic loss of ss - `threshold` against 1 for the positives and 0
    /// for the negatives (each row's share of the mean) and d loss / d a, ReLU passing the
    /// gradient through unchanged, plus `peer` [D] on the positive rows.
    public func forwardForwardRows(
        _ a: Tensor, normalized: Tensor, sumSquares: Tensor, relu: Bool = true,
        epsilon: Float = 1e-8, positives: Int = 0, threshold: Float = 0,
        gradient: Tensor? = nil, rowLosses: Tensor? = nil, peer: Tensor? = nil,
        on stream: Stream? = nil
    ) throws {
        let operation = "forwardForwardRows"
        try check(operation, a, normalized, sumSquares)
        let (rows, columns) = (a.rows, a.columns)
        try requireCount(operation, normalized, a.count)
        try requireCount(operation, sumSquares, rows)
        var lossRows = 0
        if let gradient, let rowLosses {
            try check(operation, gradient, rowLosses)
            lossRows = rowLosses.count
            guard lossRows <= rows, positives <= lossRows, gradient.count == lossRows * columns
            else {
                throw SigPropError.shapeMismatch(
                    operation: operation,
                    detail:
                        "\(lossRows) loss rows (\(positives) positive) of \(a.shape) need a "
                        + "gradient of [\(lossRows), \(columns)], got \(gradient.shape)")
            }
        } else if gradient != nil || rowLosses != nil {
            throw SigPropError.configuration(
                "\(operation): the gradient and the row losses come together")
        }
        if let peer {
            try check(operation, peer)
            try requireCount("\(operation) peer", peer, columns)
        }
        try backend.forwardForwardRows(
            ForwardForwardRowShape(
                rows: rows, columns: columns, positives: positives, lossRows: lossRows,
                threshold: threshold, relu: relu, epsilon: epsilon),
            a: a.storage, normalized: normalized.storage, sumSquares: sumSquares.storage,
            gradient: gradient?.storage, rowLosses: rowLosses?.storage, peer: peer?.storage,
            on: try queue(stream, operation))
    }

    /// Forward-Forward's first layer on rows that differ from computed ones only in the label
    /// written over their first K inputs (Kernels/forward_forward.cl's ff_relabel): `a`
    /// [B, N] is `inputs` [B, D] (unit-RMS rows, each with a label) times `weight`ᵀ [N, D]
    /// plus `bias`. Each `rows` entry asks for the pre-activations of source row `source` of
    /// `a`, whose label is `from`, with label `to` instead, or with `to` nil for the row of
    /// `neutral` [B, D] (1/K in each label input) of the same sample; they go to rows
    /// `firstRow`... of `output` [*, N]. A label's share of a row is one column of W, so a
    /// row costs N multiply-adds instead of the D x N of its product.
    public func forwardForwardRelabel(
        _ a: Tensor, inputs: Tensor, weight: Tensor, bias: Tensor, classes: Int,
        rows: [(source: Int, from: Int, to: Int?)], neutral: Tensor? = nil, into output: Tensor,
        at firstRow: Int = 0, on stream: Stream? = nil
    ) throws {
        let operation = "forwardForwardRelabel"
        try check(operation, a, inputs, weight, bias, output)
        let (units, features) = (weight.rows, weight.columns)
        guard a.columns == units, inputs.columns == features, inputs.rows == a.rows,
            bias.count == units, output.columns == units, (1...features).contains(classes),
            firstRow >= 0, firstRow + rows.count <= output.rows
        else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "rows \(a.shape) of inputs \(inputs.shape) by weight \(weight.shape) and "
                    + "bias \(bias.shape), \(classes) classes, into rows \(firstRow)..<"
                    + "\(firstRow + rows.count) of \(output.shape)")
        }
        if let neutral {
            try check(operation, neutral)
            try requireCount("\(operation) neutral", neutral, inputs.count)
        }
        for row in rows {
            guard (0..<a.rows).contains(row.source), (0..<classes).contains(row.from),
                row.to.map({ (0..<classes).contains($0) }) ?? (neutral != nil)
            else {
                throw SigPropError.shapeMismatch(
                    operation: operation,
                    detail:
                        "row \(row.source) from label \(row.from) to \(row.to.map(String.init) ?? "neutral") "
                        + "is outside \(a.rows) rows, \(classes) labels"
                        + (neutral == nil ? " (no neutral rows given)" : ""))
            }
        }
        guard !rows.isEmpty else { return }
        let plan = try tensor(
            rows.flatMap { [Float($0.source), Float($0.from), Float($0.to ?? -1)] },
            shape: [rows.count, 3], on: stream)
        try backend.forwardForwardRelabel(
            ForwardForwardRelabelShape(
                units: units, inputs: features, classes: classes, rows: rows.count,
                firstRow: firstRow),
            a: a.storage, inputs: inputs.storage, neutral: neutral?.storage,
            weight: weight.storage, bias: bias.storage, plan: plan.storage,
            into: output.storage, on: try queue(stream, operation))
    }

    /// The first layer's weight gradient over rows that differ from computed ones only in
    /// their label (Kernels/forward_forward.cl's ff_relabel_gradient, the transpose of
    /// `forwardForwardRelabel`). `inputs` [B, D] are unit-RMS rows with a label each. Each
    /// `rows` entry r stands for source row `source` of `inputs` with label `from` replaced by
    /// `to`, and row `firstRow` + r of `gradient` [*, N] is d loss / d (its pre-activations).
    /// Adds to `weightGradient` [N, D] what those rows give beyond the same gradients times
    /// their source rows: s g (e_to - e_from), s the source row's label entry. So
    /// (g₊ + g₋)ᵀ Z₊ and this give the gradient of positives and negatives together from one
    /// product over B rows where it took two.
    public func forwardForwardRelabelGradient(
        _ gradient: Tensor, inputs: Tensor, classes: Int,
        rows: [(source: Int, from: Int, to: Int)], firstRow: Int = 0,
        into weightGradient: Tensor, on stream: Stream? = nil
    ) throws {
        let operation = "forwardForwardRelabelGradient"
        try check(operation, gradient, inputs, weightGradient)
        let (units, features) = (weightGradient.rows, weightGradient.columns)
        guard gradient.columns == units, inputs.columns == features,
            (1...features).contains(classes), firstRow >= 0,
            firstRow + rows.count <= gradient.rows
        else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "rows \(firstRow)..<\(firstRow + rows.count) of gradient \(gradient.shape) "
                    + "and inputs \(inputs.shape) into a weight gradient \(weightGradient.shape), "
                    + "\(classes) classes")
        }
        for row in rows {
            guard (0..<inputs.rows).contains(row.source), (0..<classes).contains(row.from),
                (0..<classes).contains(row.to)
            else {
                throw SigPropError.shapeMismatch(
                    operation: operation,
                    detail:
                        "row \(row.source) from label \(row.from) to \(row.to) is outside "
                        + "\(inputs.rows) rows, \(classes) labels")
            }
        }
        guard !rows.isEmpty else { return }
        let plan = try tensor(
            rows.flatMap { [Float($0.source), Float($0.from), Float($0.to)] },
            shape: [rows.count, 3], on: stream)
        try backend.forwardForwardRelabelGradient(
            ForwardForwardRelabelShape(
                units: units, inputs: features, classes: classes, rows: rows.count,
                firstRow: firstRow),
            gradient: gradient.storage, inputs: inputs.storage, plan: plan.storage,
            into: weightGradient.storage, on: try queue(stream, operation))
    }

    /// Forward-Forward's peer normalisation (Kernels/forward_forward.cl): moves
    /// `runningMean` [D] towards the mean of relu(a) over the first `positives` rows of `a`
    /// and writes d (`weight` x peer loss) / d h for each positive entry of unit j into
    /// `peer` [D].
    public func forwardForwardPeer(
        _ a: Tensor, positives: Int, runningMean: Tensor, peer: Tensor, momentum: Float,
        weight: Float, on stream: Stream? = nil
    ) throws {
        let operation = "forwardForwardPeer"
        try check(operation, a, runningMean, peer)
        try requireCount(operation, runningMean, a.columns)
        try requireCount(operation, peer, a.columns)
        guard (1...a.rows).contains(positives) else {
            throw SigPropError.shapeMismatch(
                operation: operation, detail: "\(positives) positive rows of \(a.shape)")
        }
        try backend.forwardForwardPeer(
            a: a.storage, columns: a.columns, positives: positives,
            runningMean: runningMean.storage, peer: peer.storage, momentum: momentum,
            weight: weight, on: try queue(stream, operation))
    }
}
