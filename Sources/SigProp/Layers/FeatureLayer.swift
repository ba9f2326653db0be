/// The normalisation inside a block: `f(z) = act(norm(op(z)))`.
public enum NormKind: String, Sendable, Codable, CaseIterable {
    case none
    /// Over each sample's features, with a learned scale and shift (PyTorch LayerNorm).
    case layer
    /// Over each channel's positions of each sample, no affine (PyTorch InstanceNorm2d default).
    case instance
}

/// What a layer's forward pass keeps for its gradient: the input and the intermediate values.
public struct LayerPass {
    public let input: Tensor
    /// act(norm(op(input))), the layer's output.
    public let output: Tensor
    /// norm's normalised values and 1/std per row, when there is a norm.
    let normalized: Tensor?
    let rstd: Tensor?
}

/// One learning map `f(z) = act(norm(op(z; W, b)))`, the same for both streams. Written once,
/// against `Device`; the backend never shows here.
public protocol FeatureLayer: AnyObject {
    var parameters: [Parameter] { get }
    /// The output shape for an input of shape `input` (batch dimension first).
    func outputShape(for input: [Int]) throws -> [Int]
    func forward(_ input: Tensor, on stream: Stream?) throws -> LayerPass
    /// Adds d loss / d parameters for `pass` given d loss / d output (`accumulate` false: sets
    /// them). No gradient goes to the input: it is a constant for this block.
    func accumulateGradients(_ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, on stream: Stream?) throws
}

/// PyTorch's default init for Linear and Conv2d (kaiming-uniform with a = sqrt(5)): weights and
/// bias uniform in ±1/sqrt(fan_in).
func defaultInit(_ count: Int, fanIn: Int, using generator: inout SeededGenerator) -> [Float] {
    let bound = 1 / Float(max(fanIn, 1)).squareRoot()
    return generator.uniform(count, in: -bound...bound)
}

/// A dense layer: `act(norm(x Wᵀ + b))`, x flattened to [B, in].
public final class DenseLayer: FeatureLayer {
    public let inputs: Int, outputs: Int
    public let norm: NormKind
    public let activation: Activation
    let weight: Parameter
    let bias: Parameter?
    let gamma: Parameter?, beta: Parameter?
    public var parameters: [Parameter] { [weight] + [bias, gamma, beta].compactMap { $0 } }

    public init(device: Device, name: String, inputs: Int, outputs: Int, bias: Bool = true, norm: NormKind = .none,
                activation: Activation, generator: inout SeededGenerator) throws {
        guard norm != .instance else { throw SigPropError.configuration("\(name): instance norm needs a convolution's spatial positions; use layer norm for dense blocks") }
        self.inputs = inputs
        self.outputs = outputs
        self.norm = norm
        self.activation = activation
        weight = try Parameter(name: "\(name).weight", value: device.tensor(defaultInit(outputs * inputs, fanIn: inputs, using: &generator), shape: [outputs, inputs]))
        self.bias = bias ? try Parameter(name: "\(name).bias", value: device.tensor(defaultInit(outputs, fanIn: inputs, using: &generator), shape: [outputs])) : nil
        if norm == .layer {
            gamma = try Parameter(name: "\(name).norm.weight", value: device.tensor([Float](repeating: 1, count: outputs), shape: [outputs]))
            beta = try Parameter(name: "\(name).norm.bias", value: device.zeros([outputs]))
        } else {
            gamma = nil
            beta = nil
        }
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        let features = input.dropFirst().reduce(1, *)
        guard features == inputs else {
            throw SigPropError.shapeMismatch(operation: "DenseLayer", detail: "input \(input) has \(features) features, the layer takes \(inputs)")
        }
        return [input.first ?? 1, outputs]
    }

    public func forward(_ input: Tensor, on stream: Stream?) throws -> LayerPass {
        let device = input.device
        let shape = try outputShape(for: input.shape)
        let z = try device.zeros(shape, on: stream)
        guard let gamma, let beta else {
            try device.gemm(input, weight.value, transposeB: true, into: z, bias: bias?.value, activation: activation, on: stream)
            return LayerPass(input: input, output: z, normalized: nil, rstd: nil)
        }
        try device.gemm(input, weight.value, transposeB: true, into: z, bias: bias?.value, on: stream)
        let xhat = try device.zeros(shape, on: stream), rstd = try device.zeros([shape[0]], on: stream)
        try device.normalizeRows(z, rows: shape[0], into: xhat, rstd: rstd, on: stream)
        // z is no longer needed: the output is written over it.
        try device.scaleShiftColumns(xhat, scale: gamma.value, shift: beta.value, into: z, on: stream)
        try device.activate(activation, z, into: z, on: stream)
        return LayerPass(input: input, output: z, normalized: xhat, rstd: rstd)
    }

    public func accumulateGradients(_ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, on stream: Stream?) throws {
        let device = pass.output.device
        let beta0: Float = accumulate ? 1 : 0
        let dz = try device.zeros(pass.output.shape, on: stream)
        try device.activationGradient(activation, output: pass.output, gradient: outputGradient, into: dz, on: stream)
        if let gamma, let beta, let xhat = pass.normalized, let rstd = pass.rstd {
            let product = try device.zeros(dz.shape, on: stream)
            try device.multiply(dz, xhat, into: product, on: stream)
            try device.columnSums(product, into: gamma.gradient, beta: beta0, on: stream)
            try device.columnSums(dz, into: beta.gradient, beta: beta0, on: stream)
            try device.scaleShiftColumns(dz, scale: gamma.value, into: dz, on: stream)
            try device.normalizeRowsGradient(dz, xhat: xhat, rstd: rstd, into: dz, on: stream)
        }
        try device.gemm(dz, transposeA: true, pass.input, into: weight.gradient, beta: beta0, on: stream)
        if let bias { try device.columnSums(dz, into: bias.gradient, beta: beta0, on: stream) }
    }
}

/// A 2-D convolution layer: `act(norm(conv(x; W, b)))` over NCHW input.
public final class ConvLayer: FeatureLayer {
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    public let norm: NormKind
    public let activation: Activation
    let weight: Parameter
    let bias: Parameter?
    public var parameters: [Parameter] { [weight] + [bias].compactMap { $0 } }

    public init(device: Device, name: String, inChannels: Int, outChannels: Int, kernelSize: Int = 3, stride: Int = 1, padding: Int = 1,
                bias: Bool = true, norm: NormKind = .instance, activation: Activation, generator: inout SeededGenerator) throws {
        guard norm != .layer else { throw SigPropError.configuration("\(name): use instance norm (or none) in convolution blocks") }
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.norm = norm
        self.activation = activation
        let fanIn = inChannels * kernelSize * kernelSize
        weight = try Parameter(name: "\(name).weight", value: device.tensor(
            defaultInit(outChannels * fanIn, fanIn: fanIn, using: &generator), shape: [outChannels, inChannels, kernelSize, kernelSize]))
        self.bias = bias ? try Parameter(name: "\(name).bias", value: device.tensor(defaultInit(outChannels, fanIn: fanIn, using: &generator), shape: [outChannels])) : nil
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 4, input[1] == inChannels else {
            throw SigPropError.shapeMismatch(operation: "ConvLayer", detail: "input \(input) must be [B, \(inChannels), H, W]")
        }
        let height = (input[2] + 2 * padding - kernelSize) / stride + 1, width = (input[3] + 2 * padding - kernelSize) / stride + 1
        guard input[2] + 2 * padding >= kernelSize, input[3] + 2 * padding >= kernelSize, height >= 1, width >= 1 else {
            throw SigPropError.shapeMismatch(operation: "ConvLayer", detail: "a \(input[2])x\(input[3]) image is smaller than the \(kernelSize)x\(kernelSize) kernel with padding \(padding)")
        }
        return [input[0], outChannels, height, width]
    }

    public func forward(_ input: Tensor, on stream: Stream?) throws -> LayerPass {
        let device = input.device
        let shape = try outputShape(for: input.shape)
        let z = try device.zeros(shape, on: stream)
        guard norm == .instance else {
            try device.conv2d(input, weight: weight.value, bias: bias?.value, into: z, stride: stride, padding: padding, activation: activation, on: stream)
            return LayerPass(input: input, output: z, normalized: nil, rstd: nil)
        }
        try device.conv2d(input, weight: weight.value, bias: bias?.value, into: z, stride: stride, padding: padding, on: stream)
        let planes = shape[0] * shape[1]
        let xhat = try device.zeros(shape, on: stream), rstd = try device.zeros([planes], on: stream)
        try device.normalizeRows(z, rows: planes, into: xhat, rstd: rstd, on: stream)
        try device.activate(activation, xhat, into: z, on: stream)
        return LayerPass(input: input, output: z, normalized: xhat, rstd: rstd)
    }

    public func accumulateGradients(_ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, on stream: Stream?) throws {
        let device = pass.output.device
        let dz = try device.zeros(pass.output.shape, on: stream)
        try device.activationGradient(activation, output: pass.output, gradient: outputGradient, into: dz, on: stream)
        if let xhat = pass.normalized, let rstd = pass.rstd {
            try device.normalizeRowsGradient(dz, xhat: xhat, rstd: rstd, into: dz, on: stream)
        }
        try device.conv2dWeightGradient(pass.input, outputGradient: dz, into: weight.gradient, biasGradient: bias?.gradient,
                                        beta: accumulate ? 1 : 0, stride: stride, padding: padding, on: stream)
    }
}
