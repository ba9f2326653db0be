import Foundation

/// A one-off search for the gemm parameters that run training's products fastest on one
/// OpenCL device (`swift run -c release doctor --tune`), written to the tuning cache. The
/// table's own value is a candidate, so the pick is never slower than the table as measured.
/// Each candidate must first compute an awkward product like the CPU fallback; one that fails
/// to build or to match is skipped and reported.
package enum KernelTuning {
    /// A product timed for each candidate.
    public struct Shape: Sendable, CustomStringConvertible {
        public let m: Int, n: Int, k: Int
        public let transposeA: Bool, transposeB: Bool

        init(_ m: Int, _ n: Int, _ k: Int, _ transposes: String) {
            (self.m, self.n, self.k) = (m, n, k)
            (transposeA, transposeB) = (transposes.first == "T", transposes.last == "T")
        }

        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
        public var description: String {
            "\(m)x\(n)x\(k) \(transposeA ? "T" : "N")\(transposeB ? "T" : "N")"
        }
        var gemm: GemmShape {
            GemmShape(
                m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB, alpha: 1, beta: 0,
                activation: .identity)
        }
    }

    /// The default mlp's products at batch 128 (dense forwards are NT, weight gradients TN; 784
    /// and 1024 inputs) and a square NN like the conv layers' im2col products.
    public static let trainingShapes = [
        Shape(128, 1024, 784, "NT"), Shape(1024, 784, 128, "TN"), Shape(128, 1024, 1024, "NT"),
        Shape(1024, 1024, 128, "TN"),
        Shape(512, 512, 512, "NN"),
    ]

    /// Checked in every transpose and in the fused update (W: m x n, pairs of depth k and 29):
    /// a multiple of no tile, vector width or group, yet above every `gemmDirectBelow`, so the
    /// candidate's tiled kernels run on it, edges included.
    static let checkShape = (m: 67, n: 45, k: 131)

    /// Timed rounds: every candidate runs every shape once per round, candidates in turns,
    /// so a change in the machine's load falls on all of them alike; each one's median counts.
    static let rounds = 7

    /// Tunes `entry`'s device over `candidates(for:)` and the training shapes, and records the
    /// pick in `cacheFile` (other devices' entries kept). `progress` gets one line per step.
    public static func tune(_ entry: OpenCLDeviceEntry, cacheFile: URL, progress: (String) -> Void)
        throws -> KernelTuningReport
    {
        try tune(
            entry, candidates: candidates(for: entry.info), shapes: trainingShapes, rounds: rounds,
            cacheFile: cacheFile, progress: progress)
    }

    /// The table's value first, then variants of one kernel's parameters at a time around it,
    /// those that fit the device.
    static func candidates(for info: OpenCLDeviceInfo) -> [KernelParameters] {
        let table = KernelParameters.forDevice(info)
        var variants: [KernelParameters] = []
        switch table.gemmKernels {
        case .registerBlocked:
            // gemm_outer: 4-8 rows of 1-2 vectors of 8 or 16 floats (the table's AVX2 and AVX-512
            // blocks and their neighbours; more accumulators than registers spill).
            for width in [8, 16] {
                for rows in [4, 6, 8] {
                    for vectors in [1, 2] {
                        var p = table
                        (p.gemmVectorWidth, p.gemmOuterRows, p.gemmOuterVectors) = (
                            width, rows, vectors
                        )
                        variants.append(p)
                    }
                }
            }
            // gemm_dot: 2x2 to 4x4 dot products along K in 4, 8 or 16 lanes.
            for width in [4, 8, 16] {
                for side in [2, 3, 4] {
                    var p = table
                    (p.gemmDotVectorWidth, p.gemmDotRows, p.gemmDotColumns) = (width, side, side)
                    variants.append(p)
                }
            }
        case .localTiled:
            for tile in [8, 16] {
                for work in [2, 4, 8] {
                    for depth in [8, 16, 32] {
                        var p = table
                        (p.gemmTile, p.gemmWorkPerItem, p.gemmTileDepth) = (tile, work, depth)
                        variants.append(p)
                    }
                }
            }
        }
        var candidates = [table]
        for p in variants where p.fits(info) && !candidates.contains(p) { candidates.append(p) }
        return candidates
    }

    /// The search with its settings open: tests pass a few candidates, small shapes, few rounds.
    static func tune(
        _ entry: OpenCLDeviceEntry, candidates: [KernelParameters], shapes: [Shape], rounds: Int,
        cacheFile: URL,
        progress: (String) -> Void
    ) throws -> KernelTuningReport {
        let bench = try Bench(entry: entry, shapes: shapes)
        let table = KernelParameters.forDevice(entry.info)
        var skipped: [String] = []
        // Building, checking and the first run of each shape (where the driver generates code)
        // take most of the time; timing comes after, in turns, so every candidate keeps its
        // context and operands until then (about 20 MB each for the training shapes).
        var ready: [(label: String, candidate: Bench.Candidate)] = []
        for (index, parameters) in candidates.enumerated() {
            let label = "candidate \(index + 1) of \(candidates.count)"
            do {
                ready.append((label, try bench.prepare(parameters)))
                progress("\(label): \(parameters.summary): matches the CPU fallback")
            } catch {
                skipped.append("\(parameters.summary): \(error)")
                progress("\(label): \(parameters.summary): skipped, \(error)")
            }
        }
        guard !ready.isEmpty else {
            throw SigPropError.configuration(
                "kernel tuning of \(entry.info.name): no candidate built and matched the CPU "
                    + "fallback:\n  "
                    + skipped.joined(separator: "\n  "))
        }
        progress("timing \(ready.count) candidates on \(shapes.count) shapes in \(rounds) rounds")
        var measured = try bench.time(ready.map(\.candidate), rounds: rounds)
        for ((label, _), result) in zip(ready, measured) {
            progress(
                "\(label): \(result.summary): " + String(format: "%.1f GFLOP/s", result.gflops))
        }
        if let combined = fastestKernelsCombined(measured, shapes: shapes),
            combined.fits(entry.info), !candidates.contains(combined)
        {
            // Timed again in turns with the table's value and the fastest so far.
            do {
                let finalists = ready.filter {
                    $0.candidate.parameters == table
                        || $0.candidate.parameters == fastest(measured).parameters
                }.map(\.candidate)
                measured = try bench.time(finalists + [try bench.prepare(combined)], rounds: rounds)
                let gflops = measured.first { $0.parameters == combined }?.gflops ?? 0
                progress(
                    "the fastest gemm_outer with the fastest gemm_dot: \(combined.summary): "
                        + String(format: "%.1f GFLOP/s", gflops))
            } catch {
                skipped.append("\(combined.summary): \(error)")
                progress(
                    "the fastest gemm_outer with the fastest gemm_dot: \(combined.summary): "
                        + "skipped, \(error)"
                )
            }
        }
        let tuned = fastest(measured)
        let tableResult = measured.first { $0.parameters == table }
        try KernelTuningCache.record(
            KernelTuningCache.Entry(
                for: entry.info, parameters: tuned.parameters, tunedGFLOPS: tuned.gflops,
                tableGFLOPS: tableResult?.gflops),
            in: cacheFile)
        return KernelTuningReport(
            device: entry.info, shapes: shapes, table: tableResult, tuned: tuned,
            candidates: ready.count + skipped.count,
            skipped: skipped, cacheFile: cacheFile)
    }

    /// The smallest total time (`measured` holds at least one).
    static func fastest(_ measured: [KernelTuningReport.Measurement])
        -> KernelTuningReport.Measurement
    {
        measured.dropFirst().reduce(measured[0]) {
            $1.seconds.reduce(0, +) < $0.seconds.reduce(0, +) ? $1 : $0
        }
    }

    /// gemm_outer (NN, TN, TT) and gemm_dot (NT) run different products with parameters of
    /// their own, and the candidates vary one of them at a time: the fastest of each, together.
    static func fastestKernelsCombined(
        _ measured: [KernelTuningReport.Measurement], shapes: [Shape]
    ) -> KernelParameters? {
        guard measured.first?.parameters.gemmKernels == .registerBlocked else { return nil }
        func seconds(_ result: KernelTuningReport.Measurement, in kernel: String) -> Double {
            zip(shapes, result.seconds).filter {
                GemmPlan($0.0.gemm, result.parameters).kernel == kernel
            }.map(\.1).reduce(0, +)
        }
        guard
            let outer = measured.min(by: {
                seconds($0, in: "gemm_outer") < seconds($1, in: "gemm_outer")
            }),
            let dot = measured.min(by: { seconds($0, in: "gemm_dot") < seconds($1, in: "gemm_dot") }
            )
        else { return nil }
        var combined = outer.parameters
        (combined.gemmDotVectorWidth, combined.gemmDotRows, combined.gemmDotColumns) =
            (
                dot.parameters.gemmDotVectorWidth, dot.parameters.gemmDotRows,
                dot.parameters.gemmDotColumns
            )
        return combined
    }

    /// The operands (made once, for every candidate), the CPU fallback's answers for the check,
    /// and the steps of measuring candidates.
    struct Bench {
        let entry: OpenCLDeviceEntry
        let shapes: [Shape]
        let operands: [(a: [Float], b: [Float])]
        let check:
            [(shape: Shape, a: [Float], b: [Float], c: [Float], bias: [Float], expected: [Float])]
        /// The fused weight update's kernels share the candidate's tiles: one SGD step with
        /// rate 1 on two operand pairs, whose change of W is minus their gradient.
        let updateCheck:
            (
                weight: [Float], pairs: [(outputGradient: [Float], input: [Float], rows: Int)],
                expected: [Float]
            )

        /// alpha 1, beta -0.5 and a bias: the epilogue's vector loads of C and bias run too.
        static let checkBeta: Float = -0.5

        init(entry: OpenCLDeviceEntry, shapes: [Shape]) throws {
            (self.entry, self.shapes) = (entry, shapes)
            var generator = SeededGenerator(seed: 7)
            operands = shapes.map {
                (generator.uniform($0.m * $0.k), generator.uniform($0.k * $0.n))
            }
            let reference = try Device.cpu()
            let (m, n, k) = KernelTuning.checkShape
            check = try ["NN", "NT", "TN", "TT"].map { transposes in
                let shape = Shape(m, n, k, transposes)
                let (a, b, c, bias) = (
                    generator.uniform(m * k), generator.uniform(k * n), generator.uniform(m * n),
                    generator.uniform(n)
                )
                return (
                    shape, a, b, c, bias,
                    try Self.product(shape, a, b, c: c, bias: bias, on: reference)
                )
            }
            let pairs = [k, 29].map { rows in
                (
                    outputGradient: generator.uniform(rows * m), input: generator.uniform(rows * n),
                    rows: rows
                )
            }
            let weight = generator.uniform(m * n)
            updateCheck = (
                weight, pairs, try Self.updateChange(weight: weight, pairs: pairs, on: reference)
            )
        }

        /// W after the check's SGD step, minus W before: -(dZ1ᵀ X1 + dZ2ᵀ X2).
        static func updateChange(
            weight: [Float], pairs: [(outputGradient: [Float], input: [Float], rows: Int)],
            on device: Device
        ) throws -> [Float] {
            let (m, n, _) = KernelTuning.checkShape
            let w = try device.tensor(weight, shape: [m, n])
            let operands = try pairs.map { pair in
                (
                    outputGradient: try device.tensor(pair.outputGradient, shape: [pair.rows, m]),
                    input: try device.tensor(pair.input, shape: [pair.rows, n])
                )
            }
            try device.updateWeights(
                w, gradientPairs: operands,
                rule: UpdateRule(.sgd, learningRate: 1, step: 1), state: [])
            return zip(try device.read(w), weight).map { $0 - $1 }
        }

        static func product(
            _ s: Shape, _ a: [Float], _ b: [Float], c: [Float], bias: [Float], on device: Device
        ) throws -> [Float] {
            let result = try device.tensor(c, shape: [s.m, s.n])
            try device.gemm(
                try device.tensor(a, shape: s.transposeA ? [s.k, s.m] : [s.m, s.k]),
                transposeA: s.transposeA,
                try device.tensor(b, shape: s.transposeB ? [s.n, s.k] : [s.k, s.n]),
                transposeB: s.transposeB,
                into: result, beta: checkBeta, bias: try device.tensor(bias, shape: [s.n]))
            return try device.read(result)
        }

        /// A candidate ready to time: its own context with gemm built, checked, its operands in
        /// place and each shape run once.
        struct Candidate {
            let parameters: KernelParameters
            let device: Device
            let runs: [() throws -> Void]
        }

        func prepare(_ parameters: KernelParameters) throws -> Candidate {
            let backend = try OpenCLBackend(
                entry: entry, parameters: parameters, origin: .tuningCandidate)
            do {
                _ = try backend.buildProgram("gemm")
            } catch let error as OpenCLBuildError {
                throw SigPropError.configuration(
                    "gemm failed to build: "
                        + (error.log.split(separator: "\n").first.map(String.init) ?? "no build log")
                )
            }
            let device = try Device(backend: backend)
            for item in check {
                let error = SelfCheck.normalisedSquaredError(
                    try Self.product(
                        item.shape, item.a, item.b, c: item.c, bias: item.bias, on: device),
                    item.expected)
                guard error <= SelfCheck.tolerance else {
                    throw SigPropError.configuration(
                        String(
                            format: "differs from the CPU fallback on %@ (NMSE %.3g > %.0g)",
                            item.shape.description, error, SelfCheck.tolerance))
                }
            }
            let updateError = SelfCheck.normalisedSquaredError(
                try Self.updateChange(
                    weight: updateCheck.weight, pairs: updateCheck.pairs, on: device),
                updateCheck.expected)
            guard updateError <= SelfCheck.tolerance else {
                throw SigPropError.configuration(
                    String(
                        format:
                            "its fused weight update differs from the CPU fallback's (NMSE %.3g > "
                            + "%.0g)",
                        updateError, SelfCheck.tolerance))
            }
            let runs = try zip(shapes, operands).map { shape, operand in
                let a = try device.tensor(
                    operand.a, shape: shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k])
                let b = try device.tensor(
                    operand.b, shape: shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n])
                let c = try device.zeros([shape.m, shape.n])
                let run = {
                    try device.gemm(
                        a, transposeA: shape.transposeA, b, transposeB: shape.transposeB, into: c)
                }
                try run()
                return run
            }
            try device.defaultStream.synchronize()
            return Candidate(parameters: parameters, device: device, runs: runs)
        }

        /// Each candidate's median seconds per shape over `rounds` rounds in turns.
        func time(_ candidates: [Candidate], rounds: Int) throws -> [KernelTuningReport.Measurement]
        {
            var seconds = candidates.map { _ in shapes.map { _ in [Double]() } }
            for _ in 0..<rounds {
                for (c, candidate) in candidates.enumerated() {
                    for (s, run) in candidate.runs.enumerated() {
                        let start = DispatchTime.now().uptimeNanoseconds
                        try run()
                        try candidate.device.defaultStream.synchronize()
                        seconds[c][s].append(
                            Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                    }
                }
            }
            return zip(candidates, seconds).map { candidate, times in
                KernelTuningReport.Measurement(
                    parameters: candidate.parameters, shapes: shapes,
                    seconds: times.map { $0.sorted()[$0.count / 2] })
            }
        }
    }
}

/// What a tuning run found, for `doctor --tune` to print.
package struct KernelTuningReport: Sendable {
    /// One candidate's median time per shape.
    public struct Measurement: Sendable {
        let parameters: KernelParameters
        let shapes: [KernelTuning.Shape]
        /// Median seconds of each shape, in the order of `shapes`.
        public let seconds: [Double]

        public var summary: String { parameters.summary }
        /// All the shapes' multiply-adds over their total time.
        public var gflops: Double { shapes.map(\.flops).reduce(0, +) / seconds.reduce(0, +) / 1e9 }
        public func gflops(of shape: Int) -> Double { shapes[shape].flops / seconds[shape] / 1e9 }
    }

    public let device: OpenCLDeviceInfo
    public let shapes: [KernelTuning.Shape]
    /// The table's value, timed in the same rounds as the pick (nil if it was not among the
    /// candidates or failed its check).
    public let table: Measurement?
    /// The pick, as written to the cache.
    public let tuned: Measurement
    /// Candidates tried, skipped ones included.
    public let candidates: Int
    /// Candidates that failed to build or to match the CPU fallback, each with why.
    public let skipped: [String]
    public let cacheFile: URL

    public var tunedIsTable: Bool { table?.parameters == tuned.parameters }
}
