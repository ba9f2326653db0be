/// The OpenCL matrix product: kernel choice and launch geometry from `KernelParameters`.
extension OpenCLBackend {
    func gemm(
        _ s: GemmShape, a: TensorStorage, b: TensorStorage, c: TensorStorage, bias: TensorStorage?,
        on queue: BackendQueue
    ) throws {
        let plan = GemmPlan(s, parameters)
        let batch = s.batch
        // The kernels take offsets and strides as int; their products are formed in size_t.
        let extents = [
            batch.offsetA + (batch.count - 1) * batch.strideA,
            batch.offsetB + (batch.count - 1) * batch.strideB,
            batch.offsetC + (batch.count - 1) * batch.strideC,
        ]
        guard extents.allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw SigPropError.configuration(
                "gemm: a batch of \(batch.count) products reaches element \(extents.max()!), "
                    + "beyond the kernels' 32-bit offsets; use smaller chunks"
            )
        }
        if plan.splits > 1 {
            // Partial products per slice of K into scratch, then their sum with the epilogue.
            let clQueue = queue as! OpenCLQueue
            try clQueue.sequence {
                let partials = try clQueue.scratch(
                    2, bytes: plan.splits * s.m * s.n * 4, context: context)
                try launch(
                    "gemm", "gemm_tiled_partial",
                    [
                        .int(Int32(s.m)), .int(Int32(s.n)), .int(Int32(s.k)),
                        .int(s.transposeA ? 1 : 0), .int(s.transposeB ? 1 : 0),
                        .buffer(mem(a)), .buffer(mem(b)), .buffer(partials),
                        .int(Int32(plan.slice)),
                    ], global: plan.global + [plan.splits], local: plan.local.map { $0 + [1] },
                    on: queue)
                try launch(
                    "gemm", "gemm_splitk_sum",
                    [
                        .int(Int32(s.m)), .int(Int32(s.n)), .int(Int32(plan.splits)),
                        .buffer(partials), .buffer(mem(c)),
                        .float(s.alpha), .float(s.beta), .buffer(mem(bias ?? c)),
                        .int(bias == nil ? 0 : s.biasPerRow ? 2 : 1), .int(s.activation.code),
                    ], global: [s.n, s.m], on: queue)
            }
            return
        }
        let arguments = { (b: CLBuffer) -> [CLKernel.Argument] in
            [
                .int(Int32(s.m)), .int(Int32(s.n)), .int(Int32(s.k)), .int(s.transposeA ? 1 : 0),
                .int(s.transposeB ? 1 : 0),
                .float(s.alpha), .float(s.beta), .buffer(self.mem(a)), .buffer(b),
                .buffer(self.mem(c)),
                // Without a bias the kernels never read the argument; C stands in for it.
                .buffer(self.mem(bias ?? c)), .int(bias == nil ? 0 : s.biasPerRow ? 2 : 1),
                .int(s.activation.code),
                .int(Int32(batch.offsetA)), .int(Int32(batch.strideA)), .int(Int32(batch.offsetB)),
                .int(Int32(batch.strideB)),
                .int(Int32(batch.offsetC)), .int(Int32(batch.strideC)),
            ]
        }
        if let stride = plan.paddedStride {
            // B's rows copied `stride` floats apart into scratch, then the product from the copy.
            let clQueue = queue as! OpenCLQueue
            try clQueue.sequence {
                let padded = try clQueue.scratch(2, bytes: s.k * stride * 4, context: context)
                try launch(
                    "gemm", "gemm_pad_rows",
                    [.buffer(mem(b)), .buffer(padded), .int(Int32(s.n)), .int(Int32(stride))],
                    global: [s.n, s.k], on: queue)
                try launch(
                    "gemm", plan.kernel, arguments(padded) + [.int(Int32(stride))],
                    global: plan.global + [batch.count], local: plan.local.map { $0 + [1] },
                    on: queue)
            }
            return
        }
        try launch(
            "gemm", plan.kernel, arguments(mem(b)), global: plan.global + [batch.count],
            local: plan.local.map { $0 + [1] }, on: queue)
    }

    /// The fused weight update: the TN product's kernel (as `GemmPlan` picks it for
    /// Wᵀ-shaped products) in its `gemm_update_*` form, the optimizer step as its epilogue.
    func updateWeights(
        m: Int, n: Int, pairs: [WeightGradientPair], weight: TensorStorage, rule update: UpdateRule,
        state: [TensorStorage], on queue: BackendQueue
    ) throws {
        let depth = pairs.reduce(0) { $0 + $1.rows }
        let shape = GemmShape(
            m: m, n: n, k: depth, transposeA: true, transposeB: false, alpha: 1, beta: 0,
            activation: .identity)
        let plan = GemmPlan(shape, parameters, fusedUpdate: true)
        let kernel = plan.kernel.replacingOccurrences(of: "gemm_", with: "gemm_update_")
        let first = pairs[0]
        let second = pairs.count > 1 ? pairs[1] : nil
        let rule = UpdateEpilogue(update, state: state)
        try launch(
            "gemm", kernel,
            [
                .int(Int32(m)), .int(Int32(n)), .int(Int32(first.rows)),
                .int(Int32(second?.rows ?? 0)),
                .buffer(mem(first.outputGradient)), .buffer(mem(first.input)),
                // Without a second pair the kernels never read it; the first stands in.
                .buffer(mem(second?.outputGradient ?? first.outputGradient)),
                .buffer(mem(second?.input ?? first.input)),
                .buffer(mem(weight)), .buffer(mem(rule.states[0] ?? weight)),
                .buffer(mem(rule.states[1] ?? weight)), .buffer(mem(rule.states[2] ?? weight)),
                .int(rule.code), .int(rule.flags), .float(rule.rate), .float(rule.beta1),
                .float(rule.beta2), .float(rule.epsilon),
                .float(rule.weightDecay), .float(rule.biasCorrection2Sqrt),
            ], global: plan.global, local: plan.local, on: queue)
    }
}

/// An `UpdateRule` as gemm.cl's update epilogue takes it (RULE_* codes, SGD_* flags, and the
/// Adam names reused for SGD's momentum and dampening).
struct UpdateEpilogue {
    var code: Int32, flags: Int32 = 0
    var rate: Float, beta1: Float = 0, beta2: Float = 0, epsilon: Float = 0, weightDecay: Float,
        biasCorrection2Sqrt: Float = 1
    /// Adam: m, v, v_max; SGD: the momentum buffer. Unused slots are never read.
    var states: [TensorStorage?]

    init(_ s: UpdateRule, state: [TensorStorage]) {
        switch s.kind {
        case .adam, .amsgrad:
            code = s.kind == .amsgrad ? 1 : 0
            rate = s.stepSize
            (beta1, beta2, epsilon, weightDecay, biasCorrection2Sqrt) = (
                s.beta1, s.beta2, s.epsilon, s.weightDecay, s.biasCorrection2Sqrt
            )
            states = [state[0], state[1], state.count > 2 ? state[2] : nil]
        case .sgd:
            code = 2
            let momentum = state.first
            let hasMomentum = momentum != nil && s.momentum != 0
            flags = (hasMomentum ? 1 : 0) | (s.nesterov ? 2 : 0) | (s.firstStep ? 4 : 0)
            rate = s.learningRate
            (beta1, beta2, weightDecay) = (s.momentum, s.dampening, s.weightDecay)
            states = [momentum, nil, nil]
        }
    }
}

/// Which kernel of gemm.cl computes a product, over which work-items. Every kernel takes the
/// same arguments and needs no padding; they differ in what they require of the shape.
struct GemmPlan: Equatable {
    var kernel: String
    var global: [Int]
    var local: [Int]?
    /// `gemm_tiled` only: slices of K (`gemm_tiled_partial` groups per tile of C) and their
    /// depth; 1 and K when K is not split.
    var splits = 1
    var slice = 0
    /// `gemm_outer_padded` only: B is first copied with its rows this many floats apart.
    var paddedStride: Int?

    /// Whether the panel of B that each `gemm_outer` work-item streams (K rows, read again by
    /// the work-items below it) falls into too few cache sets to stay cached: a cache of S sets
    /// of 64 bytes puts rows whose byte stride has the power-of-two factor f into S / (f / 64)
    /// of its sets, and K rows fill them past 16 ways (a 2 MB L2, 2048 sets of 16 ways) where
    /// K * f exceeds 2^21 bytes; half that, for the other operands sharing the sets
    /// (docs/performance.md, kernels on a CPU).
    static func panelCrowdsCache(columns: Int, depth: Int) -> Bool {
        let stride = 4 * columns
        let factor = min(stride & -stride, 1 << 17)  // the largest power of two dividing the stride
        return depth * factor > 1 << 20
    }

    /// `fusedUpdate`: the plan of the fused update's product, which neither splits K (its
    /// epilogue needs the whole sum in one group) nor pads B (its kernels read B in place).
    init(_ s: GemmShape, _ p: KernelParameters, fusedUpdate: Bool = false) {
        let divide = { (x: Int, y: Int) in (x + y - 1) / y }
        let direct = s.m * s.n * s.k < p.gemmDirectBelow
        switch p.gemmKernels {
        case .localTiled where !direct:
            let tile = p.gemmTile * p.gemmWorkPerItem
            kernel = "gemm_tiled"
            global = [divide(s.n, tile) * p.gemmTile, divide(s.m, tile) * p.gemmTile]
            local = [p.gemmTile, p.gemmTile]
            // Few tiles: split K into slices of at least four local tiles each, for about
            // 2 x gemmSplitBelow groups in all. A choice by shape and parameters only, so a
            // product sums in the same order on every run and schedule.
            let tiles = divide(s.m, tile) * divide(s.n, tile)
            let minimumSlice = 4 * p.gemmTileDepth
            if !fusedUpdate, s.batch == .single, tiles < p.gemmSplitBelow, s.k >= 2 * minimumSlice {
                let wanted = min(divide(2 * p.gemmSplitBelow, tiles), s.k / minimumSlice)
                slice = divide(divide(s.k, wanted), p.gemmTileDepth) * p.gemmTileDepth
                splits = divide(s.k, slice)
            }
            if splits < 2 { (splits, slice) = (1, s.k) }
            return
        case .registerBlocked where !direct && s.transposeB && !s.transposeA:
            // Dimension 0 runs down the rows of C, so consecutive work-items share their rows
            // of B (still in cache). Groups of one: without barriers there is nothing to share,
            // and PoCL hands out groups to its threads one by one.
            kernel = "gemm_dot"
            global = [divide(s.m, p.gemmDotRows), divide(s.n, p.gemmDotColumns)]
            local = [1, 1]
            return
        case .registerBlocked where !direct:
            // TT runs as Cᵀ = B A: rows of the computed product are columns of C.
            let (rows, columns) = s.transposeB ? (s.n, s.m) : (s.m, s.n)
            if rows >= p.gemmOuterRows && columns >= p.gemmVectorWidth {
                kernel = "gemm_outer"
                global = [
                    divide(rows, p.gemmOuterRows),
                    divide(columns, p.gemmOuterVectors * p.gemmVectorWidth),
                ]
                local = [1, 1]
                if !fusedUpdate, !s.transposeB, s.batch == .single, rows >= 16 * p.gemmOuterRows,
                    Self.panelCrowdsCache(columns: columns, depth: s.k)
                {
                    kernel = "gemm_outer_padded"
                    // One cache line more: consecutive rows move to the next set.
                    paddedStride = columns + 16
                }
                return
            }
        default:
            break
        }
        kernel = "gemm_direct"
        global = [s.n, s.m]
        local = nil
    }
}
