/// The model metadata of checkpoints written before networks were descriptions: one of two
/// fixed architectures with its input shape and classes. Read so that those checkpoints still
/// resume; it converts to the preset that builds the same network, parameter for parameter.
struct LegacyModelConfig: Decodable {
    enum Kind: String, Decodable { case mlp, cnn }

    var kind: Kind
    var inputShape: [Int]
    var classes: Int
    var hiddenLayers: Int
    var width: Int
    var activation: Activation
    var denseNorm: NormKind
    var convNorm: NormKind
    var dropout: Float
    var fixedContext: Bool

    var converted: (description: NetworkDescription, inputShape: [Int], classes: Int) {
        var description =
            kind == .mlp ? NetworkDescription.mlp(hiddenLayers: hiddenLayers, width: width) : .cnn
        description = description.withDropout(dropout)
        description.activation = activation
        description.denseNorm = denseNorm
        description.convNorm = convNorm
        description.fixedContext = fixedContext
        return (description, inputShape, classes)
    }
}
