import Foundation

/// Element-wise nonlinearity applied after a block's linear part (and norm).
public enum Activation: String, CaseIterable, Sendable, Codable {
    case identity, relu
    case leakyRelu = "leaky-relu"
    case tanh

    /// Code passed to kernels; matches the ACT_* constants in Kernels/*.cl.
    var code: Int32 {
        switch self {
        case .identity: 0
        case .relu: 1
        case .leakyRelu: 2
        case .tanh: 3
        }
    }

    /// LeakyReLU's negative slope, as in PyTorch's default and the reference.
    static let leakySlope: Float = 0.01
}

/// `C[M,N] = act(alpha * op(A) op(B) + beta * C + bias)`, row-major, `op(A)` M x K, `op(B)` K x N.
struct GemmShape: Sendable, Equatable {
    var m: Int, n: Int, k: Int
    var transposeA: Bool, transposeB: Bool
    var alpha: Float, beta: Float
    var activation: Activation
    /// The bias runs along C's rows (a convolution's output channels), not its columns.
    var biasPerRow = false
    /// Several products of this shape in one launch (OpenCL): a convolution's images.
    var batch = GemmBatch.single
}

/// Where each product of a batch finds its operands: product g's A starts at element
/// `offsetA + g * strideA` of its buffer, and likewise B and C.
struct GemmBatch: Sendable, Equatable {
    var count = 1
    var offsetA = 0, strideA = 0
    var offsetB = 0, strideB = 0
    var offsetC = 0, strideC = 0

    static let single = GemmBatch()
}

/// NCHW convolution (cross-correlation, as PyTorch), square stride and zero padding.
public struct ConvShape: Sendable, Equatable {
    public var batch: Int, inChannels: Int, height: Int, width: Int
    public var outChannels: Int, kernelHeight: Int, kernelWidth: Int
    public var stride: Int, padding: Int

    public var outHeight: Int { (height + 2 * padding - kernelHeight) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernelWidth) / stride + 1 }
}

public enum PoolKind: String, Sendable, Codable, CaseIterable { case max, average }

/// Non-overlapping pooling windows of `size` x `size` over NCHW input. Where `size` does not
/// divide the input, the partial window at the edge is dropped (PyTorch's floor mode) or, with
/// `ceil`, pooled over the entries it covers (PyTorch's `ceil_mode`: an average divides by
/// those entries' count).
struct PoolShape: Sendable, Equatable {
    var planes: Int, height: Int, width: Int, size: Int
    var ceil = false
    var outHeight: Int { Self.outputLength(height, size: size, ceil: ceil) }
    var outWidth: Int { Self.outputLength(width, size: size, ceil: ceil) }

    /// The windows along a side of `length`.
    static func outputLength(_ length: Int, size: Int, ceil: Bool) -> Int {
        ceil ? (length + size - 1) / size : length / size
    }
}

/// A tensor viewed as [outer, groups, inner] for normalisation: group g holds the elements
/// (o, g, i) for every o and i. Layer norm of [B, D] is (1, B, D); instance norm of
/// [B, C, H, W] is (1, B*C, H*W); batch norm is (B, C, H*W), or (B, D, 1) for dense.
public struct GroupLayout: Sendable, Equatable {
    public var outer: Int, groups: Int, inner: Int
    public init(outer: Int, groups: Int, inner: Int) {
        self.outer = outer
        self.groups = groups
        self.inner = inner
    }
    public var count: Int { outer * groups * inner }
}

/// Which target mask the local loss builds from `YY = T0 T0ᵀ` (see docs/signal-propagation.md).
public enum LocalLossKind: Sendable, Equatable {
    /// `M_ij = 1` at every maximum of row i (ties all count). The reference's default.
    case maxAll
    /// One 1 per row, at the first maximum (cross entropy against argmax).
    case maxRandom
    /// `M_ij = 1` for the k largest entries of row i (entries tied with the k-th count too).
    case topK(Int)

    /// Entries of a row of YY within this fraction of the row's largest magnitude of each other
    /// are ties. Rows of one label carry the same target activations, but a BLAS sums rows and
    /// columns at different places of its register tiles in different orders (OpenBLAS's
    /// Haswell and Zen kernels do), so their YY entries can differ in the last bits: an exact
    /// comparison would keep one entry of a tie, and the mask, hence the loss, would depend on
    /// the CPU's kernels. Far above that rounding, far below the gaps between targets.
    static let tieTolerance: Float = 0x1p-16

    var code: Int32 {
        switch self {
        case .maxAll: 0
        case .maxRandom: 1
        case .topK: 2
        }
    }

    var k: Int32 {
        if case .topK(let k) = self { return Int32(k) }
        return 0
    }
}

/// One operand pair of the fused weight update: `rows` rows of d loss / d the layer's output
/// (rows x M) and the same rows of the layer's input (rows x N); the weight gradient is the
/// sum over pairs of outputGradientᵀ · input.
struct WeightGradientPair {
    let outputGradient: TensorStorage
    let input: TensorStorage
    let rows: Int
}
