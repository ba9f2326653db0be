/// The OpenCL matrix product: kernel choice and launch geometry from `KernelParameters`.
extension OpenCLBackend {
    func gemm(_ s: GemmShape, a: TensorStorage, b: TensorStorage, c: TensorStorage, bias: TensorStorage?, on queue: BackendQueue) throws {
        let plan = GemmPlan(s, parameters)
        try launch("gemm", plan.kernel, [
            .int(Int32(s.m)), .int(Int32(s.n)), .int(Int32(s.k)), .int(s.transposeA ? 1 : 0), .int(s.transposeB ? 1 : 0),
            .float(s.alpha), .float(s.beta), .buffer(mem(a)), .buffer(mem(b)), .buffer(mem(c)),
            // Without a bias the kernels never read the argument; C stands in for it.
            .buffer(mem(bias ?? c)), .int(bias == nil ? 0 : 1), .int(s.activation.code),
        ], global: plan.global, local: plan.local, on: queue)
    }
}

/// Which kernel of gemm.cl computes a product, over which work-items. Every kernel takes the
/// same arguments and needs no padding; they differ in what they require of the shape.
struct GemmPlan: Equatable {
    var kernel: String
    var global: [Int]
    var local: [Int]?

    init(_ s: GemmShape, _ p: KernelParameters) {
        let divide = { (x: Int, y: Int) in (x + y - 1) / y }
        let direct = s.m * s.n * s.k < p.gemmDirectBelow
        switch p.gemmKernels {
        case .localTiled where !direct:
            let tile = p.gemmTile * p.gemmWorkPerItem
            kernel = "gemm_tiled"
            global = [divide(s.n, tile) * p.gemmTile, divide(s.m, tile) * p.gemmTile]
            local = [p.gemmTile, p.gemmTile]
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
                global = [divide(rows, p.gemmOuterRows), divide(columns, p.gemmOuterVectors * p.gemmVectorWidth)]
                local = [1, 1]
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
