/// The normalisation inside a block: `f(z) = act(norm(op(z)))`. Each has a learned scale
/// and shift per feature (dense) or channel (conv), as PyTorch's affine norms.
public enum NormKind: String, Sendable, Codable, CaseIterable {
    case none
    /// Over each sample's features (PyTorch LayerNorm); dense blocks.
    case layer
    /// Over each channel's positions of each sample (InstanceNorm2d, affine); conv blocks.
    case instance
    /// Over the batch (and positions) for each feature or channel, without running statistics
    /// (BatchNorm with track_running_stats=False). Statistics are taken per stream.
    case batch

    /// Whether each sample is normalised on its own (so the K-row shortcut is exact).
    public var isPerSample: Bool { self != .batch }
}

/// A norm with its affine part, inside a dense or conv layer.
final class AffineNorm {
    let kind: NormKind
    let gamma: Parameter, beta: Parameter

    init(kind: NormKind, channels: Int, name: String, device: Device) throws {
        self.kind = kind
        gamma = try Parameter(
            name: "\(name).norm.weight",
            value: device.tensor([Float](repeating: 1, count: channels), shape: [channels]))
        beta = try Parameter(name: "\(name).norm.bias", value: device.zeros([channels]))
    }

    /// Positions per channel: H*W for NCHW activations, 1 for [B, D].
    static func inner(_ shape: [Int]) -> Int { shape.count == 4 ? shape[2] * shape[3] : 1 }

    func layout(_ shape: [Int]) -> GroupLayout {
        let batch = shape[0]
        let channels = shape[1]
        let inner = Self.inner(shape)
        switch kind {
        case .layer: return GroupLayout(outer: 1, groups: batch, inner: channels * inner)
        case .instance: return GroupLayout(outer: 1, groups: batch * channels, inner: inner)
        case .batch, .none: return GroupLayout(outer: batch, groups: channels, inner: inner)
        }
    }

    /// Normalises `z` and writes `gamma * xhat + beta` over it; returns xhat and rstd.
    func forward(_ z: Tensor, on stream: Stream?) throws -> (xhat: Tensor, rstd: Tensor) {
        let device = z.device
        let layout = layout(z.shape)
        let xhat = try device.allocate(z.shape, on: stream)
        let rstd = try device.allocate([layout.groups], on: stream)
        try device.normalize(z, layout: layout, into: xhat, rstd: rstd, on: stream)
        try device.scaleShiftChannels(
            xhat, scale: gamma.value, shift: beta.value, inner: Self.inner(z.shape), into: z,
            on: stream)
        return (xhat, rstd)
    }

    /// Turns `gradient` (d loss / d norm output) into d loss / d norm input in place, and adds
    /// the scale and shift gradients.
    func backward(
        _ gradient: Tensor, xhat: Tensor, rstd: Tensor, accumulate: Bool, on stream: Stream?
    ) throws {
        let device = gradient.device
        let inner = Self.inner(gradient.shape)
        let channels = gamma.value.count
        let beta0: Float = accumulate ? 1 : 0
        let product = try device.allocate(gradient.shape, on: stream)
        try device.multiply(gradient, xhat, into: product, on: stream)
        try device.channelSums(
            product, channels: channels, inner: inner, into: gamma.gradient, beta: beta0, on: stream
        )
        try device.channelSums(
            gradient, channels: channels, inner: inner, into: beta.gradient, beta: beta0, on: stream
        )
        try device.scaleShiftChannels(
            gradient, scale: gamma.value, inner: inner, into: gradient, on: stream)
        try device.normalizeGradient(
            gradient, xhat: xhat, rstd: rstd, layout: layout(gradient.shape), into: gradient,
            on: stream)
    }
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
    /// `overwriting`: the caller has no further use for `outputGradient`, so its storage holds
    /// the gradients on the way to the parameters' instead of a new tensor of the output's
    /// size (a block's largest, held until the batch retires).
    func accumulateGradients(
        _ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, overwriting: Bool,
        on stream: Stream?) throws
    /// One learning step: d loss / d parameters from every pass (the streams' gradients
    /// summed), then `step` applied to every parameter. Where a layer can, its weight's step
    /// runs in the epilogue of the weight-gradient product (`Device.updateWeights`).
    /// `overwritingGradients` as `overwriting` above, for every pass.
    func learn(
        from passes: [(pass: LayerPass, outputGradient: Tensor)], step: UpdateRule,
        overwritingGradients: Bool, on stream: Stream?) throws
}

extension FeatureLayer {
    /// Sets (`accumulate` false) or adds to the parameters' gradients; `outputGradient` is
    /// left as it is.
    public func accumulateGradients(
        _ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, on stream: Stream?
    ) throws {
        try accumulateGradients(
            pass, outputGradient: outputGradient, accumulate: accumulate, overwriting: false,
            on: stream)
    }

    /// One learning step that leaves the passes' output gradients as they are.
    public func learn(
        from passes: [(pass: LayerPass, outputGradient: Tensor)], step: UpdateRule,
        on stream: Stream?
    ) throws {
        try learn(from: passes, step: step, overwritingGradients: false, on: stream)
    }

    public func learn(
        from passes: [(pass: LayerPass, outputGradient: Tensor)], step: UpdateRule,
        overwritingGradients: Bool, on stream: Stream?
    ) throws {
        try learnUnfused(
            from: passes, step: step, overwritingGradients: overwritingGradients, on: stream)
    }

    /// The unfused step: gradients into the parameters' gradient tensors, then the optimizer.
    func learnUnfused(
        from passes: [(pass: LayerPass, outputGradient: Tensor)], step: UpdateRule,
        overwritingGradients: Bool, on stream: Stream?
    ) throws {
        for (index, (pass, gradient)) in passes.enumerated() {
            try accumulateGradients(
                pass, outputGradient: gradient, accumulate: index > 0,
                overwriting: overwritingGradients, on: stream)
        }
        try step.apply(to: parameters, on: stream)
    }

    /// Where d loss / d (the layer's product) goes: `outputGradient`'s own storage when it
    /// may be overwritten, else a new tensor.
    func productGradientStorage(
        _ pass: LayerPass, outputGradient: Tensor, overwriting: Bool, on stream: Stream?
    ) throws -> Tensor {
        guard overwriting else {
            return try pass.output.device.allocate(pass.output.shape, on: stream)
        }
        return try outputGradient.reshaped(pass.output.shape)
    }
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
    public let activation: Activation
    let weight: Parameter
    let bias: Parameter?
    let norm: AffineNorm?
    public var normKind: NormKind { norm?.kind ?? .none }
    public var parameters: [Parameter] {
        [weight] + [bias, norm?.gamma, norm?.beta].compactMap { $0 }
    }

    public init(
        device: Device, name: String, inputs: Int, outputs: Int, bias: Bool = true,
        norm: NormKind = .none,
        activation: Activation, generator: inout SeededGenerator
    ) throws {
        guard norm != .instance else {
            throw SigPropError.configuration(
                "\(name): instance norm needs a convolution's positions; dense blocks take layer "
                    + "or batch norm"
            )
        }
        self.inputs = inputs
        self.outputs = outputs
        self.activation = activation
        weight = try Parameter(
            name: "\(name).weight",
            value: device.tensor(
                defaultInit(outputs * inputs, fanIn: inputs, using: &generator),
                shape: [outputs, inputs]))
        self.bias =
            bias
            ? try Parameter(
                name: "\(name).bias",
                value: device.tensor(
                    defaultInit(outputs, fanIn: inputs, using: &generator), shape: [outputs])) : nil
        self.norm =
            norm == .none
            ? nil : try AffineNorm(kind: norm, channels: outputs, name: name, device: device)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        let features = input.dropFirst().reduce(1, *)
        guard features == inputs else {
            throw SigPropError.shapeMismatch(
                operation: "DenseLayer",
                detail: "input \(input) has \(features) features, the layer takes \(inputs)")
        }
        return [input.first ?? 1, outputs]
    }

    public func forward(_ input: Tensor, on stream: Stream?) throws -> LayerPass {
        let device = input.device
        let z = try device.allocate(try outputShape(for: input.shape), on: stream)
        guard let norm else {
            // No norm: bias and activation run in the product's epilogue, one launch.
            try device.gemm(
                input, weight.value, transposeB: true, into: z, bias: bias?.value,
                activation: activation, on: stream)
            return LayerPass(input: input, output: z, normalized: nil, rstd: nil)
        }
        try device.gemm(
            input, weight.value, transposeB: true, into: z, bias: bias?.value, on: stream)
        let (xhat, rstd) = try norm.forward(z, on: stream)
        try device.activate(activation, z, into: z, on: stream)
        return LayerPass(input: input, output: z, normalized: xhat, rstd: rstd)
    }

    public func accumulateGradients(
        _ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, overwriting: Bool,
        on stream: Stream?
    ) throws {
        let dz = try productGradient(
            pass, outputGradient: outputGradient, accumulate: accumulate,
            overwriting: overwriting, on: stream)
        try pass.output.device.gemm(
            dz, transposeA: true, pass.input, into: weight.gradient, beta: accumulate ? 1 : 0,
            on: stream)
    }

    /// Where the device fuses weight updates: the bias and norm gradients as usual, the weight
    /// stepped by the optimizer inside its gradient product over both streams.
    public func learn(
        from passes: [(pass: LayerPass, outputGradient: Tensor)], step: UpdateRule,
        overwritingGradients: Bool, on stream: Stream?
    ) throws {
        guard weight.value.device.fusesWeightUpdates else {
            return try learnUnfused(
                from: passes, step: step, overwritingGradients: overwritingGradients, on: stream)
        }
        guard (1...2).contains(passes.count), let device = passes.first?.pass.output.device else {
            throw SigPropError.configuration(
                "DenseLayer.learn takes one or two passes (the input and target streams), got "
                    + "\(passes.count)"
            )
        }
        let pairs = try passes.enumerated().map { index, element in
            (
                outputGradient: try productGradient(
                    element.pass, outputGradient: element.outputGradient, accumulate: index > 0,
                    overwriting: overwritingGradients, on: stream),
                input: element.pass.input
            )
        }
        try device.updateWeights(
            weight.value, gradientPairs: pairs, rule: step, state: try step.state(of: weight),
            on: stream)
        try step.apply(to: parameters.filter { $0 !== weight }, on: stream)
    }

    /// d loss / d (x Wᵀ + b) from d loss / d output; adds (or with `accumulate` false, sets)
    /// the bias and norm gradients on the way.
    private func productGradient(
        _ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, overwriting: Bool,
        on stream: Stream?
    ) throws -> Tensor {
        let device = pass.output.device
        let dz = try productGradientStorage(
            pass, outputGradient: outputGradient, overwriting: overwriting, on: stream)
        try device.activationGradient(
            activation, output: pass.output, gradient: outputGradient, into: dz, on: stream)
        if let norm, let xhat = pass.normalized, let rstd = pass.rstd {
            try norm.backward(dz, xhat: xhat, rstd: rstd, accumulate: accumulate, on: stream)
        }
        if let bias {
            try device.channelSums(
                dz, channels: outputs, into: bias.gradient, beta: accumulate ? 1 : 0, on: stream)
        }
        return dz
    }
}

/// A 2-D convolution layer: `act(norm(conv(x; W, b)))` over NCHW input.
public final class ConvLayer: FeatureLayer {
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    public let activation: Activation
    let weight: Parameter
    let bias: Parameter?
    let norm: AffineNorm?
    public var normKind: NormKind { norm?.kind ?? .none }
    public var parameters: [Parameter] {
        [weight] + [bias, norm?.gamma, norm?.beta].compactMap { $0 }
    }

    public init(
        device: Device, name: String, inChannels: Int, outChannels: Int, kernelSize: Int = 3,
        stride: Int = 1, padding: Int = 1,
        bias: Bool = true, norm: NormKind = .instance, activation: Activation,
        generator: inout SeededGenerator
    ) throws {
        guard norm != .layer else {
            throw SigPropError.configuration(
                "\(name): convolution blocks take instance or batch norm (or none), not layer norm")
        }
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.activation = activation
        let fanIn = inChannels * kernelSize * kernelSize
        weight = try Parameter(
            name: "\(name).weight",
            value: device.tensor(
                defaultInit(outChannels * fanIn, fanIn: fanIn, using: &generator),
                shape: [outChannels, inChannels, kernelSize, kernelSize]))
        self.bias =
            bias
            ? try Parameter(
                name: "\(name).bias",
                value: device.tensor(
                    defaultInit(outChannels, fanIn: fanIn, using: &generator), shape: [outChannels])
            ) : nil
        self.norm =
            norm == .none
            ? nil : try AffineNorm(kind: norm, channels: outChannels, name: name, device: device)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 4, input[1] == inChannels else {
            throw SigPropError.shapeMismatch(
                operation: "ConvLayer", detail: "input \(input) must be [B, \(inChannels), H, W]")
        }
        let height = (input[2] + 2 * padding - kernelSize) / stride + 1
        let width = (input[3] + 2 * padding - kernelSize) / stride + 1
        guard input[2] + 2 * padding >= kernelSize, input[3] + 2 * padding >= kernelSize,
            height >= 1, width >= 1
        else {
            throw SigPropError.shapeMismatch(
                operation: "ConvLayer",
                detail:
                    "a \(input[2])x\(input[3]) image is smaller than the "
                    + "\(kernelSize)x\(kernelSize) kernel with padding \(padding)"
            )
        }
        return [input[0], outChannels, height, width]
    }

    public func forward(_ input: Tensor, on stream: Stream?) throws -> LayerPass {
        let device = input.device
        let shape = try outputShape(for: input.shape)
        let z = try device.allocate(shape, on: stream)
        guard let norm else {
            try device.conv2d(
                input, weight: weight.value, bias: bias?.value, into: z, stride: stride,
                padding: padding, activation: activation, on: stream)
            return LayerPass(input: input, output: z, normalized: nil, rstd: nil)
        }
        try device.conv2d(
            input, weight: weight.value, bias: bias?.value, into: z, stride: stride,
            padding: padding, on: stream)
        let (xhat, rstd) = try norm.forward(z, on: stream)
        try device.activate(activation, z, into: z, on: stream)
        return LayerPass(input: input, output: z, normalized: xhat, rstd: rstd)
    }

    public func accumulateGradients(
        _ pass: LayerPass, outputGradient: Tensor, accumulate: Bool, overwriting: Bool,
        on stream: Stream?
    ) throws {
        let device = pass.output.device
        let dz = try productGradientStorage(
            pass, outputGradient: outputGradient, overwriting: overwriting, on: stream)
        try device.activationGradient(
            activation, output: pass.output, gradient: outputGradient, into: dz, on: stream)
        if let norm, let xhat = pass.normalized, let rstd = pass.rstd {
            try norm.backward(dz, xhat: xhat, rstd: rstd, accumulate: accumulate, on: stream)
        }
        try device.conv2dWeightGradient(
            pass.input, outputGradient: dz, into: weight.gradient, biasGradient: bias?.gradient,
            beta: accumulate ? 1 : 0, stride: stride, padding: padding, on: stream)
    }
}
