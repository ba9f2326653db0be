// Kernel microbenchmarks: SigProp's operations on both backends, with CLBlast (same OpenCL
// device) and OpenBLAS (CPU) as anchors. Names are <op>/<impl>/<shape>; see Benchmarks/README.md.

import Benchmark
import Foundation
import SigProp

// package-benchmark measures integers per iteration; at the 1 to 100 GFLOP/s of PoCL and
// OpenBLAS on a small CPU, whole GFLOP/s would lose up to half the value, so every benchmark
// reports MFLOP/s (one unit everywhere keeps results comparable across ops and machines).
let flopRate = BenchmarkMetric.custom("MFLOP/s", polarity: .prefersLarger, useScalingFactor: false)
let flopRateScale = 1e6

/// Seconds each benchmark runs for (after one warm-up iteration): 1 unless
/// KERNEL_BENCHMARK_SECONDS says otherwise. A 2-second PoCL convolution gets one sample in 1 s;
/// give it more time for a spread.
let secondsPerBenchmark: Int = {
    let value =
        ProcessInfo.processInfo.environment["KERNEL_BENCHMARK_SECONDS"].flatMap { Int($0) } ?? 1
    return max(1, value)
}()

let benchmarks: @Sendable () -> Void = {
    // The `cpu` and `openblas` figures would be OpenBLAS's narrower kernels' (a sixth of the
    // speed on one VM): say so in the output (each benchmark's process says it once).
    if let advice = OpenBLASKernels.current().advice {
        FileHandle.standardError.write(Data("warning: \(advice)\n".utf8))
    }
    for shape in GemmCase.all {
        register("sgemm/opencl/\(shape)", flops: shape.flops) {
            try sigpropGemm(try openCLDevice(), shape)
        }
        register("sgemm/cpu/\(shape)", flops: shape.flops) {
            try sigpropGemm(try Device.cpu(), shape)
        }
        register("sgemm/clblast/\(shape)", flops: shape.flops) { try clblastGemm(shape) }
        register("sgemm/openblas/\(shape)", flops: shape.flops) { openblasGemm(shape) }
    }
    for shape in ConvCase.all {
        register("conv2d/opencl/\(shape)", flops: shape.flops) {
            try sigpropConv(try openCLDevice(), shape)
        }
        register("conv2d/cpu/\(shape)", flops: shape.flops) {
            try sigpropConv(try Device.cpu(), shape)
        }
        register("conv2d/clblast/\(shape)", flops: shape.flops) { try clblastConv(shape) }
        register("conv2d_wgrad/opencl/\(shape)", flops: shape.flops) {
            try sigpropConvWeightGradient(try openCLDevice(), shape)
        }
        register("conv2d_wgrad/cpu/\(shape)", flops: shape.flops) {
            try sigpropConvWeightGradient(try Device.cpu(), shape)
        }
    }
    // A block's local step with the optimizer in the weight-gradient product's epilogue
    // (`local_step`), and the same math as separate kernels (`local_step_unfused`).
    for shape in LocalStepCase.all {
        registerWithUnfused("local_step", shape: shape, flops: shape.flops) { device, fused in
            try sigpropLocalStep(device, shape, fused: fused)
        }
    }
    // Forward-Forward's row pass as one kernel (`ff_rows`) and as the device's generic
    // operations (`ff_rows_unfused`, which first checks that both give the same numbers).
    for shape in ForwardForwardCase.all {
        registerWithUnfused("ff_rows", shape: shape, flops: shape.flops) { device, fused in
            try sigpropForwardForwardRows(device, shape, fused: fused)
        }
    }
    // Forward-Forward's first layer on a batch's positive, negative and neutral rows: one
    // product over the positives and the rest derived from W's label columns
    // (`ff_first_layer`), and the product over all three row sets (`ff_first_layer_unfused`).
    for shape in FirstLayerCase.all {
        registerWithUnfused("ff_first_layer", shape: shape, flops: shape.flops) { device, relabel in
            try sigpropForwardForwardFirstLayer(device, shape, relabel: relabel)
        }
    }
    // Its weight gradient over the positive and negative rows: one product over the
    // positives and the label columns' share (`ff_first_layer_gradient`), and the product
    // over both row sets (`ff_first_layer_gradient_unfused`).
    for shape in FirstLayerCase.all {
        registerWithUnfused(
            "ff_first_layer_gradient", shape: shape, flops: shape.gradientFlops
        ) { device, relabel in
            try sigpropForwardForwardFirstLayerGradient(device, shape, relabel: relabel)
        }
    }
    // A PEPITA hidden layer's step with (clean - modulated) / B in one operation, as the
    // library forms it (`pepita_step`), and as a subtraction and a scaling
    // (`pepita_step_unfused`).
    for shape in PEPITAStepCase.all {
        registerWithUnfused("pepita_step", shape: shape, flops: shape.flops) { device, fused in
            try sigpropPEPITAStep(device, shape, fused: fused)
        }
    }
}

// MARK: Registration

/// Registers `<name>/<impl>/<shape>` and `<name>_unfused/<impl>/<shape>` on the OpenCL device
/// and the CPU fallback: `prepare` gets the device and whether to run the fused form.
func registerWithUnfused(
    _ name: String, shape: some CustomStringConvertible, flops: Double,
    prepare: @escaping (Device, Bool) throws -> () throws -> Void
) {
    for fused in [true, false] {
        let family = fused ? name : "\(name)_unfused"
        register("\(family)/opencl/\(shape)", flops: flops) {
            try prepare(try openCLDevice(), fused)
        }
        register("\(family)/cpu/\(shape)", flops: flops) { try prepare(try Device.cpu(), fused) }
    }
}

/// Holds one benchmark's prepared iteration between setup and the measured runs. Each
/// benchmark runs in a process of its own, so nothing is allocated for the benchmarks not run.
final class PreparedRun: @unchecked Sendable {
    var iteration: (() throws -> Void)?
}

/// Registers a benchmark whose setup (not measured) allocates and fills everything and returns
/// one iteration; the iteration ends when the device is idle, so its time is the work's time.
func register(_ name: String, flops: Double, prepare: @escaping () throws -> () throws -> Void) {
    let prepared = PreparedRun()
    Benchmark(
        name,
        configuration: .init(
            metrics: [.wallClock, flopRate],
            units: [flopRate: .count],
            warmupIterations: 1,  // kernel builds (SigProp's and CLBlast's) happen here
            maxDuration: .seconds(secondsPerBenchmark),
            maxIterations: 100
        ),
        closure: { (benchmark: Benchmark) throws in
            guard let iteration = prepared.iteration else {
                throw BenchmarkSetupError("\(name) was not prepared")
            }
            let start = ContinuousClock.now
            try iteration()
            let elapsed = (ContinuousClock.now - start).components
            let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18
            benchmark.measurement(flopRate, Int((flops / seconds / flopRateScale).rounded()))
        },
        setup: { prepared.iteration = try prepare() },
        teardown: { prepared.iteration = nil }
    )
}

struct BenchmarkSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: Shapes

/// `C[M,N] = op(A) op(B)`, row-major, named `MxNxK_` plus N/T for each operand.
struct GemmCase: CustomStringConvertible {
    let m: Int, n: Int, k: Int
    let transposeA: Bool, transposeB: Bool

    init(_ m: Int, _ n: Int, _ k: Int, _ transposes: String) {
        (self.m, self.n, self.k) = (m, n, k)
        transposeA = transposes.first == "T"
        transposeB = transposes.last == "T"
    }

    static let all: [GemmCase] = [
        // Dense blocks at batch 128: forward Z = X Wᵀ, weight gradient dW = dZᵀ X.
        GemmCase(128, 1024, 784, "NT"), GemmCase(1024, 784, 128, "TN"),
        GemmCase(128, 1024, 1024, "NT"), GemmCase(1024, 1024, 128, "TN"),
        // The local loss's Y = H Tᵀ (B x B).
        GemmCase(128, 128, 1024, "NT"),
        // Small ones: the output layer (10 classes) forward and weight gradient, and the K-row
        // target stream's H T_Kᵀ (B x K).
        GemmCase(128, 10, 1024, "NT"), GemmCase(10, 1024, 128, "TN"), GemmCase(128, 10, 784, "NT"),
        // Square, for comparison with published numbers.
        GemmCase(256, 256, 256, "NN"), GemmCase(512, 512, 512, "NN"),
        GemmCase(1024, 1024, 1024, "NN"),
    ]

    var description: String { "\(m)x\(n)x\(k)_\(transposeA ? "T" : "N")\(transposeB ? "T" : "N")" }
    var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    /// A as stored (K x M when transposed), B as stored (N x K when transposed), row-major.
    var aShape: [Int] { transposeA ? [k, m] : [m, k] }
    var bShape: [Int] { transposeB ? [n, k] : [k, n] }
}

/// A stride-1, padding-1 convolution as the CNN's blocks use it, named
/// `b<B>_c<C>to<O>_<H>x<W>_k<k>`.
struct ConvCase: CustomStringConvertible {
    let batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, kernel: Int
    let padding = 1

    static let all: [ConvCase] = [
        ConvCase(batch: 128, inChannels: 32, outChannels: 64, height: 28, width: 28, kernel: 3)
    ]

    var description: String {
        "b\(batch)_c\(inChannels)to\(outChannels)_\(height)x\(width)_k\(kernel)"
    }
    var outHeight: Int { height + 2 * padding - kernel + 1 }
    var outWidth: Int { width + 2 * padding - kernel + 1 }
    var inputShape: [Int] { [batch, inChannels, height, width] }
    var weightShape: [Int] { [outChannels, inChannels, kernel, kernel] }
    var outputShape: [Int] { [batch, outChannels, outHeight, outWidth] }
    /// 2 B Cout Ho Wo Cin k²: the same for the forward pass and the weight gradient.
    var flops: Double {
        2 * Double(batch * outChannels * outHeight * outWidth * inChannels * kernel * kernel)
    }
}

/// A dense block's whole local learning step, `b<B>_<in>to<out>`: the local loss on H, T
/// (against T0), `dW = dHᵀ X + dTᵀ X0`, one Adam update of W.
struct LocalStepCase: CustomStringConvertible {
    let batch: Int, inputs: Int, outputs: Int

    static let all: [LocalStepCase] = [LocalStepCase(batch: 128, inputs: 1024, outputs: 1024)]

    var description: String { "b\(batch)_\(inputs)to\(outputs)" }
    /// The products only (the loss rows and Adam are O(B² + N·In) element-wise work):
    /// Y = H Tᵀ, YY = T0 T0ᵀ, dH = dY T, dT = dYᵀ H (2 B² N each), and the two weight products.
    var flops: Double {
        let (b, n, i) = (Double(batch), Double(outputs), Double(inputs))
        return 4 * 2 * b * b * n + 2 * 2 * n * i * b
    }
}

/// One Forward-Forward layer's row pass, `b<B>_<D>`: its pre-activations for a batch of B as
/// the layer holds them, 3·B rows of width D (B positives, B negatives, B neutral rows), the
/// loss and its gradient on the first 2·B rows, the peer term on the positives.
struct ForwardForwardCase: CustomStringConvertible {
    let batch: Int, width: Int

    /// A layer of `train --rule ff`'s default network (three dense layers of 1000), batch 100.
    static let all: [ForwardForwardCase] = [ForwardForwardCase(batch: 100, width: 1000)]

    var description: String { "b\(batch)_\(width)" }
    var rows: Int { 3 * batch }
    var lossRows: Int { 2 * batch }
    /// The fused kernel's arithmetic per entry, the per-row terms left out: ReLU, square and
    /// sum, and the normalising product on every row (4); the gradient's product on the loss
    /// rows (1) and the peer term's sum on the positives (1).
    var flops: Double { Double(width) * Double(4 * rows + lossRows + batch) }
}

/// Forward-Forward's first layer, `b<B>_<in>to<out>`: B samples with K labels.
struct FirstLayerCase: CustomStringConvertible {
    let batch: Int, inputs: Int, units: Int, classes: Int

    /// `train --rule ff`'s first layer on Fashion-MNIST: 784 -> 1000, batch 100, 10 labels.
    static let all = [FirstLayerCase(batch: 100, inputs: 784, units: 1000, classes: 10)]

    var description: String { "b\(batch)_\(inputs)to\(units)" }
    /// The product over all 3B rows, for both forms: what they compute, not how.
    var flops: Double { 2 * Double(3 * batch) * Double(inputs) * Double(units) }
    /// The weight gradient's product over the 2B positive and negative rows.
    var gradientFlops: Double { 2 * Double(2 * batch) * Double(inputs) * Double(units) }
}

/// A PEPITA hidden layer's step, `b<B>_<in>to<out>`: the difference of the clean and the
/// modulated pass scaled by 1/B, then the weight's SGD step from its product with the
/// modulated input.
struct PEPITAStepCase: CustomStringConvertible {
    let batch: Int, inputs: Int, outputs: Int

    /// The hidden layer of `train --rule pepita`'s default 784-1024-10 network at batch 64 (the
    /// output layer steps from the error directly, without a difference).
    static let all: [PEPITAStepCase] = [PEPITAStepCase(batch: 64, inputs: 784, outputs: 1024)]

    var description: String { "b\(batch)_\(inputs)to\(outputs)" }
    /// The weight-gradient product only (the difference is O(B·out) element-wise work).
    var flops: Double { 2 * Double(outputs) * Double(inputs) * Double(batch) }
}

// MARK: Data

/// Deterministic values in [-0.5, 0.5): every implementation sees the same inputs.
func randomValues(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Float(state >> 40) / Float(1 << 24) - 0.5
    }
}

func randomTensor(_ device: Device, _ shape: [Int], seed: UInt64) throws -> Tensor {
    try device.tensor(randomValues(shape.reduce(1, *), seed: seed), shape: shape)
}
