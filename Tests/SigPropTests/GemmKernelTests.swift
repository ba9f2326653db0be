import Foundation
import Testing

@testable import SigProp

/// The gemm kernels of gemm.cl on awkward shapes (around the tile sizes, batch 1, K = 1,
/// thin products), every transpose, with alpha, beta, bias and activation, against plain
/// loops. The OpenCL device runs twice: with its own parameters (on PoCL: the register-blocked
/// kernels) and posing as a GPU (the local-memory kernel), so every kernel is checked here.
@Suite struct GemmKernelTests {
    enum Target: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case cpu, opencl, openclAsGPU
        var testDescription: String { rawValue }

        static var available: [Target] {
            TestBackend.available.contains(.opencl) ? allCases : [.cpu]
        }

        /// 64 compute units: the table then splits K of products under 64 tiles, so both
        /// gemm_tiled and gemm_tiled_partial + gemm_splitk_sum run on the shapes below.
        private static let posingAsGPU: Device? = TestBackend.openCLEntries.first.flatMap { entry in
            try? Device.opencl(
                OpenCLDeviceEntry(info: entry.info.posing(as: .gpu, computeUnits: 64), id: entry.id)
            )
        }

        func device() throws -> Device {
            switch self {
            case .cpu: try TestBackend.cpu.device()
            case .opencl: try TestBackend.opencl.device()
            case .openclAsGPU:
                try #require(Self.posingAsGPU, "could not open the OpenCL device posing as a GPU")
            }
        }
    }

    /// Around gemm_outer's 8 x 32 (AVX-512) and 6 x 16 (AVX2) tiles, gemm_dot's 4 x 4 and
    /// 3 x 3, gemm_tiled's 64 x 64; batch 1; K = 1; N below one vector; the direct switch; and
    /// K split into slices that are no multiple of anything (last slice short); B's rows 4 KB
    /// apart with K past gemm_outer's padding threshold (`GemmPlan.panelCrowdsCache`).
    static let shapes: [(m: Int, n: Int, k: Int)] = [
        (1, 1, 1), (1, 1000, 7), (1, 33, 1000), (2, 3, 4),
        (7, 15, 129), (8, 16, 300), (8, 32, 129), (9, 33, 129), (6, 16, 300), (5, 17, 500),
        (31, 31, 31), (32, 32, 32), (33, 33, 33), (63, 65, 64), (65, 63, 17),
        (1000, 40, 1), (40, 1000, 1), (129, 10, 1024), (100, 7, 100), (7, 100, 100),
        (129, 1000, 33), (1000, 129, 9), (130, 64, 127), (7, 129, 3000), (65, 129, 777),
        (129, 1024, 257),
    ]
    static let transposes = [(false, false), (false, true), (true, false), (true, true)]
    static let activations: [Activation] = [.identity, .relu, .leakyRelu, .tanh]

    @Test(arguments: Target.available)
    func everyKernelMatchesPlainLoops(_ target: Target) throws {
        let device = try target.device()
        for (index, (m, n, k)) in Self.shapes.enumerated() {
            for (ta, tb) in Self.transposes {
                let activation = Self.activations[index % Self.activations.count]
                let (alpha, beta): (Float, Float) = index % 3 == 0 ? (1, 0) : (0.5, -2)
                let withBias = index % 5 != 4
                try check(
                    device, m: m, n: n, k: k, ta: ta, tb: tb, alpha: alpha, beta: beta,
                    bias: withBias, activation: activation)
            }
        }
    }

    /// A batch of products in one launch (how the OpenCL convolution writes each image's NCHW
    /// output): operands at offsets and strides, the bias along C's rows, every transpose and
    /// both sides of the direct switch. OpenCL only: the CPU fallback calls BLAS per product.
    @Test(arguments: Target.available.filter { $0 != .cpu })
    func batchedProductsWithRowBiasMatchPlainLoops(_ target: Target) throws {
        let device = try target.device()
        for (m, n, k) in [(3, 5, 7), (9, 33, 129), (64, 49, 288), (1, 1, 1)] {
            for (ta, tb) in Self.transposes {
                let count = 3
                let (offsetA, offsetB, offsetC) = (5, 0, 7)
                // A shared, B and C with gaps.
                let (strideA, strideB, strideC) = (0, k * n + 2, m * n + 1)
                let a = random(offsetA + m * k, seed: 21)
                let b = random(offsetB + count * strideB, seed: 22)
                let c0 = random(offsetC + count * strideC, seed: 23)
                let bias = random(m, seed: 24)
                let c = try device.tensor(c0, shape: [c0.count])
                let (ta_, tb_) = (
                    try device.tensor(a, shape: [a.count]), try device.tensor(b, shape: [b.count])
                )
                let shape = GemmShape(
                    m: m, n: n, k: k, transposeA: ta, transposeB: tb, alpha: 1, beta: 0.5,
                    activation: .relu, biasPerRow: true,
                    batch: GemmBatch(
                        count: count, offsetA: offsetA, strideA: strideA, offsetB: offsetB,
                        strideB: strideB,
                        offsetC: offsetC, strideC: strideC))
                try device.backend.gemm(
                    shape, a: ta_.storage, b: tb_.storage, c: c.storage,
                    bias: try device.tensor(bias, shape: [m]).storage,
                    on: device.defaultQueue)
                var expected = c0
                for g in 0..<count {
                    let product = naiveProduct(
                        Array(a[offsetA...].prefix(m * k)),
                        Array(b[(offsetB + g * strideB)...].prefix(k * n)),
                        m: m, n: n, k: k, transposeA: ta, transposeB: tb)
                    for i in 0..<m {
                        for j in 0..<n {
                            let index = offsetC + g * strideC + i * n + j
                            expected[index] = max(0, product[i * n + j] + 0.5 * c0[index] + bias[i])
                        }
                    }
                }
                expectClose(
                    try device.read(c), expected, absolute: 2e-4, relative: 1e-4,
                    "batched \(Self.describe(m, n, k, ta, tb))")
            }
        }
    }

    /// beta == 0 must not read C: NaN there stays out of the result, in every kernel.
    @Test(arguments: Target.available)
    func zeroBetaNeverReadsTheOutput(_ target: Target) throws {
        let device = try target.device()
        for (m, n, k) in [(3, 5, 7), (9, 33, 129), (129, 100, 64), (100, 129, 64)] {
            for (ta, tb) in Self.transposes {
                let a = random(m * k, seed: 11)
                let b = random(k * n, seed: 12)
                let c = try device.tensor([Float](repeating: .nan, count: m * n), shape: [m, n])
                try device.gemm(
                    try device.tensor(a, shape: ta ? [k, m] : [m, k]), transposeA: ta,
                    try device.tensor(b, shape: tb ? [n, k] : [k, n]), transposeB: tb, into: c)
                let expected = naiveProduct(a, b, m: m, n: n, k: k, transposeA: ta, transposeB: tb)
                expectClose(
                    try device.read(c), expected, absolute: 1e-4,
                    "\(target) gemm \(Self.describe(m, n, k, ta, tb)) over NaN with beta 0")
            }
        }
    }

    /// The shape table reaches every kernel on each kind of device (else the tests above
    /// would pass without running one).
    @Test func shapesReachEveryKernel() {
        for kind in [OpenCLDeviceInfo.Kind.cpu, .gpu] {
            for name in ["pthread-skylake-avx512-AMD EPYC", "pthread-haswell-Intel Xeon"] {
                let parameters = KernelParameters.forDevice(
                    Self.info(kind: kind, name: name, computeUnits: 64))
                let used = Set(
                    Self.shapes.flatMap { s in
                        Self.transposes.map { t -> String in
                            let plan = GemmPlan(
                                GemmShape(
                                    m: s.m, n: s.n, k: s.k, transposeA: t.0, transposeB: t.1,
                                    alpha: 1, beta: 0, activation: .identity),
                                parameters)
                            return plan.splits > 1 ? "gemm_tiled_partial" : plan.kernel
                        }
                    })
                let expected: Set<String> =
                    kind == .gpu
                    ? ["gemm_tiled", "gemm_tiled_partial", "gemm_direct"]
                    : ["gemm_outer", "gemm_outer_padded", "gemm_dot", "gemm_direct"]
                #expect(used == expected, "\(kind) \(name)")
            }
        }
    }

    /// Split K covers K exactly, in slices of whole local tiles, and never for the fused
    /// update, a batch of products, or a device with enough tiles.
    @Test func splitKPlans() {
        let gpu = KernelParameters.forDevice(
            Self.info(kind: .gpu, name: "NVIDIA H200", computeUnits: 132))
        #expect(gpu.gemmSplitBelow == 132)
        func plan(
            _ m: Int, _ n: Int, _ k: Int, batch: GemmBatch = .single, fusedUpdate: Bool = false
        ) -> GemmPlan {
            GemmPlan(
                GemmShape(
                    m: m, n: n, k: k, transposeA: false, transposeB: true, alpha: 1, beta: 0,
                    activation: .identity, batch: batch),
                gpu, fusedUpdate: fusedUpdate)
        }
        // A convolution's weight gradient: 1 x 5 tiles, K = 128 images x 784 positions.
        let wgrad = plan(64, 288, 128 * 784)
        #expect(wgrad.splits == 53 && wgrad.slice % gpu.gemmTileDepth == 0)
        for (m, n, k) in [
            (64, 288, 128 * 784), (128, 128, 1024), (128, 1024, 784), (7, 129, 3000),
            (65, 129, 777), (128, 40, 130),
        ] {
            let p = plan(m, n, k)
            let covers =
                p.splits > 1 && (p.splits - 1) * p.slice < k && p.splits * p.slice >= k
                && p.slice >= 4 * gpu.gemmTileDepth
            #expect(covers, "\(m)x\(n)x\(k): \(p.splits) slices of \(p.slice)")
        }
        #expect(plan(128, 40, 127).splits == 1, "K under two slices of four tiles")
        #expect(plan(1024, 1024, 1024).splits == 1, "256 tiles for 132 compute units")
        #expect(plan(128, 128, 1024, fusedUpdate: true).splits == 1)
        #expect(plan(128, 128, 1024, batch: GemmBatch(count: 2, strideB: 1024 * 128)).splits == 1)
        #expect(
            GemmPlan(
                GemmShape(
                    m: 128, n: 128, k: 1024, transposeA: false, transposeB: true, alpha: 1, beta: 0,
                    activation: .identity),
                KernelParameters.forDevice(
                    Self.info(kind: .cpu, name: "pthread-haswell-Intel Xeon", computeUnits: 132))
            ).splits == 1)
    }

    /// gemm_outer reads B from a padded copy only where B's rows lie a large power of two
    /// apart and K is deep: not for the fused update, batches, TT, thin products or GPUs.
    @Test func paddedPlans() {
        let cpu = KernelParameters.forDevice(
            Self.info(kind: .cpu, name: "pthread-skylake-avx512-Intel Xeon"))
        func plan(
            _ m: Int, _ n: Int, _ k: Int, ta: Bool = false, tb: Bool = false,
            batch: GemmBatch = .single,
            fusedUpdate: Bool = false, _ p: KernelParameters? = nil
        ) -> GemmPlan {
            GemmPlan(
                GemmShape(
                    m: m, n: n, k: k, transposeA: ta, transposeB: tb, alpha: 1, beta: 0,
                    activation: .identity, batch: batch),
                p ?? cpu, fusedUpdate: fusedUpdate)
        }
        let square = plan(1024, 1024, 1024)
        #expect(square.kernel == "gemm_outer_padded" && square.paddedStride == 1040)
        #expect(plan(1024, 1024, 1024, ta: true).kernel == "gemm_outer_padded")
        #expect(plan(128, 2048, 300).paddedStride == 2064)
        for unpadded in [
            plan(1000, 1000, 1000), plan(512, 512, 512), plan(1024, 1024, 128, ta: true),
            plan(1024, 1024, 256),
            plan(1024, 1024, 1024, tb: true), plan(1024, 1024, 1024, ta: true, tb: true),
            plan(64, 1024, 1024),
            plan(1024, 1024, 1024, ta: true, fusedUpdate: true),
            plan(1024, 1024, 1024, batch: GemmBatch(count: 2, strideC: 1024 * 1024)),
            plan(
                1024, 1024, 1024,
                KernelParameters.forDevice(
                    Self.info(kind: .gpu, name: "NVIDIA H200", computeUnits: 132))),
        ] {
            #expect(
                unpadded.paddedStride == nil && !unpadded.kernel.hasSuffix("_padded"), "\(unpadded)"
            )
        }
    }

    /// The direct convolution kernels run where their tiles fit (CPU drivers, stride 1, a tile
    /// of channels), and the padded planes hold every float their last tiles read.
    @Test func directConvolutionPlans() {
        let cpu = KernelParameters.forDevice(
            Self.info(kind: .cpu, name: "pthread-skylake-avx512-Intel Xeon"))
        let avx2 = KernelParameters.forDevice(
            Self.info(kind: .cpu, name: "pthread-haswell-Intel Xeon"))
        var tuned = cpu  // a tuning result whose dot vectors are wider than the outer tile
        (tuned.gemmVectorWidth, tuned.gemmOuterVectors, tuned.gemmDotVectorWidth) = (4, 1, 16)
        func shape(
            _ c: Int, _ o: Int, _ h: Int, _ w: Int, k: Int = 3, kw: Int? = nil, stride: Int = 1,
            pad: Int = 1
        ) -> ConvShape {
            ConvShape(
                batch: 2, inChannels: c, height: h, width: w, outChannels: o, kernelHeight: k,
                kernelWidth: kw ?? k, stride: stride, padding: pad)
        }
        // The benchmark's layer: rows of 30, 28 x 30 positions in 27 tiles of 32, 31 rows.
        let layer = DirectConvolutionPlan(shape(32, 64, 28, 28), cpu)
        #expect(layer?.width == 30 && layer?.rows == 31 && layer?.global == [8, 27])
        for p in [cpu, avx2, tuned] {
            for s in [
                shape(32, 64, 28, 28), shape(1, 8, 1, 1, k: 1, pad: 0),
                shape(5, 17, 13, 6, k: 5, pad: 2), shape(3, 8, 4, 9, kw: 2, pad: 0),
                shape(64, 128, 14, 14), shape(2, 9, 7, 29), shape(1, 32, 2, 2, k: 5, pad: 3),
            ] {
                guard let plan = DirectConvolutionPlan(s, p) else {
                    Issue.record("no conv_direct plan for \(s)")
                    continue
                }
                let tile = p.gemmOuterVectors * p.gemmVectorWidth
                let lastRead =
                    plan.global[1] * tile - 1 + (s.kernelHeight - 1) * plan.width + s.kernelWidth
                    - 1
                #expect(
                    plan.width == s.width + 2 * s.padding && plan.rows >= s.height + 2 * s.padding
                        && lastRead < plan.plane, "\(s): \(plan)")
                #expect(
                    plan.global[1] * tile >= s.outHeight * plan.width
                        && plan.global[0] * p.gemmOuterRows >= s.outChannels, "\(s): \(plan)")
                // conv_wgrad_direct: whole vectors over the grid, the shifted planes inside.
                let patch = s.inChannels * s.kernelHeight * s.kernelWidth
                #expect(
                    plan.grid >= s.outHeight * plan.width && plan.grid % p.gemmDotVectorWidth == 0
                        && plan.grid - 1 + (s.kernelHeight - 1) * plan.width + s.kernelWidth - 1
                            < plan.plane,
                    "\(s): \(plan)")
                #expect(
                    plan.gradientGlobal[0] * p.gemmDotColumns >= patch
                        && plan.gradientGlobal[1] * p.gemmDotRows >= s.outChannels, "\(s): \(plan)")
            }
        }
        let gpu = KernelParameters.forDevice(
            Self.info(kind: .gpu, name: "NVIDIA H200", computeUnits: 132))
        #expect(DirectConvolutionPlan(shape(32, 64, 28, 28), gpu) == nil)
        #expect(DirectConvolutionPlan(shape(32, 64, 28, 28, stride: 2), cpu) == nil)
        // Fewer channels than the tile's 8 rows.
        #expect(DirectConvolutionPlan(shape(32, 7, 28, 28), cpu) == nil)
        #expect(DirectConvolutionPlan(shape(32, 7, 28, 28), avx2) != nil)  // 6 rows
    }

    /// Every row of the table fits its device, and the programs that take its values compile
    /// (on the OpenCL device at hand).
    @Test func parameterTableFitsAndCompiles() throws {
        let devices = [
            Self.info(kind: .gpu, name: "NVIDIA H100"),
            Self.info(kind: .gpu, name: "tiny", localBytes: 1024, groupSize: 64),
            Self.info(kind: .gpu, name: "small", localBytes: 4096, groupSize: 128),
            Self.info(kind: .cpu, name: "pthread-skylake-avx512-AMD EPYC"),
            Self.info(kind: .cpu, name: "pthread-haswell-Intel Xeon"),
            Self.info(kind: .other, name: "dsp", localBytes: 2048, groupSize: 16),
            Self.info(kind: .accelerator, name: "fpga", groupSize: 1),
        ]
        let backend = TestBackend.openCLEntries.first.flatMap { try? OpenCLBackend(entry: $0) }
        // The programs that take the table's values.
        let programs = try ["gemm", "conv"].map {
            ($0, try #require(KernelRegistry.source(of: $0)))
        }
        for info in devices {
            let p = KernelParameters.forDevice(info)
            #expect(
                p.gemmTile >= 1 && p.gemmTile * p.gemmTile <= info.maxWorkGroupSize,
                "\(info.name): group \(p.gemmTile)²")
            #expect(
                p.gemmTiledLocalBytes <= Int(info.localMemoryBytes),
                "\(info.name): \(p.gemmTiledLocalBytes) bytes of local memory")
            #expect(
                [2, 4, 8, 16].contains(p.gemmVectorWidth),
                "\(info.name): vector width \(p.gemmVectorWidth)")
            if let backend {
                for (name, source) in programs {
                    _ = try backend.compile(
                        name: name, source: source,
                        options: KernelRegistry.options(for: name, parameters: p))
                }
            }
        }
    }

    // MARK: Helpers

    private func check(
        _ device: Device, m: Int, n: Int, k: Int, ta: Bool, tb: Bool, alpha: Float, beta: Float,
        bias withBias: Bool,
        activation: Activation, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let a = random(m * k, seed: UInt64(m * 31 + k))
        let b = random(k * n, seed: UInt64(n * 17 + k))
        let c0 = random(m * n, seed: 3)
        let bias = random(n, seed: 4)
        let c = try device.tensor(c0, shape: [m, n])
        try device.gemm(
            try device.tensor(a, shape: ta ? [k, m] : [m, k]), transposeA: ta,
            try device.tensor(b, shape: tb ? [n, k] : [k, n]), transposeB: tb, into: c,
            alpha: alpha, beta: beta,
            bias: withBias ? try device.tensor(bias, shape: [n]) : nil, activation: activation)
        let product = naiveProduct(a, b, m: m, n: n, k: k, transposeA: ta, transposeB: tb)
        let expected = (0..<(m * n)).map { i -> Float in
            let v = alpha * product[i] + beta * c0[i] + (withBias ? bias[i % n] : 0)
            switch activation {
            case .identity: return v
            case .relu: return max(v, 0)
            case .leakyRelu: return v > 0 ? v : 0.01 * v
            case .tanh: return Foundation.tanh(v)
            }
        }
        let what =
            "\(device.kind) gemm \(Self.describe(m, n, k, ta, tb)) alpha \(alpha) beta "
            + "\(beta)\(withBias ? " bias" : "") \(activation)"
        expectClose(
            try device.read(c), expected, absolute: 2e-4, relative: 1e-4, what,
            sourceLocation: sourceLocation)
    }

    static func describe(_ m: Int, _ n: Int, _ k: Int, _ ta: Bool, _ tb: Bool) -> String {
        "\(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N")"
    }

    static func info(
        kind: OpenCLDeviceInfo.Kind, name: String, localBytes: UInt64 = 64 << 10,
        groupSize: Int = 1024,
        computeUnits: Int = 1
    ) -> OpenCLDeviceInfo {
        OpenCLDeviceInfo(
            platformIndex: 0, deviceIndex: 0, platformName: "p", name: name, vendor: "v",
            version: "OpenCL 1.2", driverVersion: "1",
            kind: kind, computeUnits: computeUnits, globalMemoryBytes: 1 << 30,
            localMemoryBytes: localBytes, maxAllocationBytes: 1 << 28,
            maxWorkGroupSize: groupSize, extensions: [])
    }
}

extension OpenCLDeviceInfo {
    /// The same device, reported as another kind (so the parameter table picks other kernels)
    /// and, where given, with another count of compute units.
    func posing(as kind: Kind, computeUnits: Int? = nil) -> OpenCLDeviceInfo {
        OpenCLDeviceInfo(
            platformIndex: platformIndex, deviceIndex: deviceIndex, platformName: platformName,
            name: name, vendor: vendor,
            version: version, driverVersion: driverVersion, kind: kind,
            computeUnits: computeUnits ?? self.computeUnits,
            globalMemoryBytes: globalMemoryBytes, localMemoryBytes: localMemoryBytes,
            maxAllocationBytes: maxAllocationBytes,
            maxWorkGroupSize: maxWorkGroupSize, extensions: extensions, maxSubDevices: maxSubDevices
        )
    }
}
