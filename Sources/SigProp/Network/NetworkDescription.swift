/// A network as data: the learning layers and the fixed steps between them, in order, with the
/// norms and activation of the learning blocks. Every dense or conv layer is a learning block
/// with its own loss and optimizer; the first is also the signal block's input part, and its
/// context part (one-hot label -> the block's output shape) is derived from it. Pools and
/// dropout follow the block before them; a conv block followed by a dense one is flattened.
/// The output layer (dense, one unit per class) comes last and is not listed.
///
/// The input shape and the classes are not part of a description: they come from the data, so
/// one description trains on any data set. Checkpoints store the description (as JSON, each
/// layer written in the layer grammar of `Layer`), and `--resume` rebuilds the network from it.
public struct NetworkDescription: Sendable, Equatable {
    /// One entry of the layer list. Written and read in the grammar `train --model` takes.
    public enum Layer: Sendable, Equatable {
        /// A dense learning block of this many features.
        case dense(Int)
        /// A conv learning block: output channels, a square kernel, stride and zero padding.
        case conv(Int, kernel: Int = 3, stride: Int = 1, padding: Int = 1)
        /// Pooling over non-overlapping `size` x `size` windows.
        case pool(PoolKind, size: Int = 2)
        /// Zeroes each entry with this probability in training (each stream its own mask).
        case dropout(Float)
        /// A spiking block: leaky integrate-and-fire neurons fed by a dense synapse.
        case lif(Int)
        /// A spiking block fed by a convolution (options as `conv`).
        case lifConv(Int, kernel: Int = 3, stride: Int = 1, padding: Int = 1)

        /// Whether the layer is a learning block (as opposed to a fixed step).
        public var learns: Bool {
            switch self {
            case .dense, .conv, .lif, .lifConv: true
            case .pool, .dropout: false
            }
        }

        /// Whether the layer is a block of spiking neurons.
        public var spikes: Bool {
            switch self {
            case .lif, .lifConv: true
            default: false
            }
        }
    }

    public var layers: [Layer]
    public var activation: Activation = .leakyRelu
    /// The norm of the dense blocks (layer, batch or none) and of the conv blocks (instance,
    /// batch or none).
    public var denseNorm: NormKind = .layer
    public var convNorm: NormKind = .instance
    /// Scales the width of every dense and conv layer (rounded, at least 1); not the output
    /// layer, whose width is the number of classes.
    public var widthMultiplier: Double = 1
    /// Keep the signal's context projection fixed at its random init.
    public var fixedContext = false
    /// Pool a partial window at the edge of an image that a pool's size does not divide
    /// (PyTorch's `ceil_mode`) rather than drop it: 7x7 pools to 4x4, not 3x3. A block's loss
    /// sees its whole output while the next block would see only the pooled part, so under
    /// local learning dropped edges cost far more than under backpropagation.
    public var ceilPools = false
    /// The preset the layers come from, if any, for messages.
    public var preset: String?
    /// The neurons, time steps and learning of the spiking layers (used where there are any).
    public var spiking = SpikingSettings()

    /// Whether the network is made of spiking layers (`lif<N>`, `lifconv<N>`).
    public var isSpiking: Bool { layers.contains(where: \.spikes) }

    public init(
        layers: [Layer], activation: Activation = .leakyRelu, denseNorm: NormKind = .layer,
        convNorm: NormKind = .instance, widthMultiplier: Double = 1, fixedContext: Bool = false
    ) {
        self.layers = layers
        self.activation = activation
        self.denseNorm = denseNorm
        self.convNorm = convNorm
        self.widthMultiplier = widthMultiplier
        self.fixedContext = fixedContext
    }

    /// The same network with dropout of probability `p` after every learning block but the
    /// last, after that block's pooling (what `--dropout` adds to a preset).
    public func withDropout(_ p: Float) -> NetworkDescription {
        guard p > 0, let last = layers.lastIndex(where: \.learns) else { return self }
        var copy = self
        copy.layers = []
        for (index, layer) in layers.enumerated() {
            copy.layers.append(layer)
            let blockEnds = index + 1 == layers.count || layers[index + 1].learns
            if blockEnds, index < last { copy.layers.append(.dropout(p)) }
        }
        return copy
    }

    /// Whether any layer is a dropout (which draws a mask per sample).
    var hasDropout: Bool {
        layers.contains { if case .dropout = $0 { true } else { false } }
    }

    /// The width of a dense or conv layer of `width` under the width multiplier.
    func scaled(_ width: Int) -> Int {
        max(1, Int((Double(width) * widthMultiplier).rounded()))
    }

    /// The layer list in the grammar (`conv32,conv64,pool,dense1024`).
    public var layerList: String { layers.map(\.description).joined(separator: ",") }

    /// The preset's name, or the layer list, with the width multiplier when it is not 1.
    public var summary: String {
        (preset ?? layerList) + (widthMultiplier == 1 ? "" : " x\(widthMultiplier)")
    }
}

// MARK: Presets

extension NetworkDescription {
    /// The presets `train --model` names.
    public static let presetNames = [
        "mlp", "cnn", "vgg6b", "vgg8b", "vgg11b", "snn-mlp", "snn-cnn",
    ]

    /// Dense blocks: `hiddenLayers` of `width` features (the signal block counts as the first).
    public static func mlp(hiddenLayers: Int = 3, width: Int = 1024) -> NetworkDescription {
        var description = NetworkDescription(
            layers: Array(repeating: .dense(width), count: hiddenLayers))
        description.preset = "mlp"
        return description
    }

    /// A small VGG-like net: conv 32, conv 64, pool, conv 128, pool, dense 1024.
    public static var cnn: NetworkDescription {
        named("cnn", "conv32,conv64,pool,conv128,pool,dense1024")
    }

    /// The VGG networks of Nøkland & Eidnes (2019), "Training neural networks with local error
    /// signals", that the Signal Propagation paper trains. Their four pools halve 32x32 images
    /// exactly; on other sizes (28x28: 7 to 3 to 1) they pool the edges too (`ceilPools`).
    public static var vgg6b: NetworkDescription {
        named(
            "vgg6b", "conv128,pool,conv256,pool,conv512,pool,conv512,pool,dense1024",
            ceilPools: true)
    }
    public static var vgg8b: NetworkDescription {
        named(
            "vgg8b",
            "conv128,conv256,pool,conv256,conv512,pool,conv512,pool,conv512,pool,dense1024",
            ceilPools: true)
    }
    public static var vgg11b: NetworkDescription {
        named(
            "vgg11b",
            "conv128,conv128,conv128,conv256,pool,conv256,conv512,pool,conv512,conv512,pool,"
                + "conv512,pool,dense1024", ceilPools: true)
    }

    /// snnTorch's tutorial network: 1,000 leaky integrate-and-fire neurons (beta 0.95,
    /// threshold 1, reset by subtraction) on the image for 25 steps, then the spiking output
    /// layer.
    public static var snnMLP: NetworkDescription { named("snn-mlp", "lif1000") }

    /// A convolutional spiking network after snnTorch's convolutional tutorial: 12 and 64
    /// 5x5 spiking feature maps, each max-pooled, then the spiking output layer.
    public static var snnCNN: NetworkDescription {
        named("snn-cnn", "lifconv12k5p0,pool,lifconv64k5p0,pool")
    }

    /// The preset called `name` (`presetNames`), nil if there is none.
    public static func preset(_ name: String) -> NetworkDescription? {
        switch name.lowercased() {
        case "mlp": .mlp()
        case "cnn": .cnn
        case "vgg6b": .vgg6b
        case "vgg8b": .vgg8b
        case "vgg11b": .vgg11b
        case "snn-mlp": .snnMLP
        case "snn-cnn": .snnCNN
        default: nil
        }
    }

    private static func named(_ name: String, _ list: String, ceilPools: Bool = false)
        -> NetworkDescription
    {
        // The lists above are valid by construction; the tests parse each preset.
        var description = try! NetworkDescription(layerList: list)
        description.preset = name
        description.ceilPools = ceilPools
        return description
    }
}
