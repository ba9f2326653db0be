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
