/// The OpenCL matrix product: kernel choice and launch geometry from `KernelParameters`.
extension OpenCLBackend {
    func gemm(_ s: GemmShape, a: TensorStorage, b: TensorStorage, c: TensorStorage, bias: TensorStorage?, on queue: BackendQueue) throws {
        let tile = parameters.gemmTile
        let roundUp = { (x: Int) in (x + tile - 1) / tile * tile }
        try launch("gemm", "gemm", [
            .int(Int32(s.m)), .int(Int32(s.n)), .int(Int32(s.k)), .int(s.transposeA ? 1 : 0), .int(s.transposeB ? 1 : 0),
            .float(s.alpha), .float(s.beta), .buffer(mem(a)), .buffer(mem(b)), .buffer(mem(c)),
            // Without a bias the kernel never reads the argument; C stands in for it.
            .buffer(mem(bias ?? c)), .int(bias == nil ? 0 : 1), .int(s.activation.code),
        ], global: [roundUp(s.n), roundUp(s.m)], local: [tile, tile], on: queue)
    }
}
