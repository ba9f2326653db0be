import Foundation

/// The layer grammar of `train --model` and of JSON descriptions, one layer per token:
///
/// - `dense<N>`: a dense block of N features (`dense1024`);
/// - `conv<N>` with options `k<K>` (kernel, default 3), `s<S>` (stride, default 1) and `p<P>`
///   (zero padding, default K/2): `conv128`, `conv64k5s2p2`;
/// - `pool` (2x2 max), `maxpool<K>`, `avgpool<K>`: pooling over K x K windows;
/// - `dropout<P>`: dropout of probability P (`dropout0.2`);
/// - `lif<N>`, `lifconv<N>` (with conv's options): spiking blocks of leaky integrate-and-fire
///   neurons fed by a dense or conv synapse (`lif1000`, `lifconv12k5p0`).
///
/// A list separates tokens with commas: `conv128,conv256,pool,dense1024`.
extension NetworkDescription.Layer: CustomStringConvertible, LosslessStringConvertible {
    /// The help text's statement of the grammar.
    public static let grammar = """
        dense<N>; conv<N> with options k<K> (kernel, default 3), s<S> (stride, 1), p<P> \
        (padding, K/2), e.g. conv64k5s2p2; pool (2x2 max), maxpool<K>, avgpool<K>; dropout<P>; \
        spiking: lif<N>, lifconv<N> (conv's options)
        """

    public var description: String {
        switch self {
        case .dense(let width):
            return "dense\(width)"
        case .conv(let channels, let kernel, let stride, let padding):
            return "conv\(channels)" + Self.convOptions(kernel, stride, padding)
        case .lif(let width):
            return "lif\(width)"
        case .lifConv(let channels, let kernel, let stride, let padding):
            return "lifconv\(channels)" + Self.convOptions(kernel, stride, padding)
        case .pool(let kind, let size):
            if kind == .max && size == 2 { return "pool" }
            return (kind == .max ? "maxpool" : "avgpool") + "\(size)"
        case .dropout(let p):
            return "dropout\(p)"
        }
    }

    /// `k<K>s<S>p<P>`, each left out where it is the default.
    private static func convOptions(_ kernel: Int, _ stride: Int, _ padding: Int) -> String {
        (kernel == 3 ? "" : "k\(kernel)") + (stride == 1 ? "" : "s\(stride)")
            + (padding == kernel / 2 ? "" : "p\(padding)")
    }

    public init?(_ description: String) {
        guard let layer = try? Self(parsing: description) else { return nil }
        self = layer
    }

    /// Parses one token; the error says what is wrong with it (without its position, which
    /// the list adds).
    public init(parsing token: String) throws {
        let text = token.trimmingCharacters(in: .whitespaces).lowercased()
        func number<T: LosslessStringConvertible>(_ digits: Substring, _ what: String) throws -> T {
            guard let value = T(String(digits)) else {
                throw LayerGrammarError("\(what) must be a number, got '\(digits)'")
            }
            return value
        }
        func width(_ rest: Substring, _ name: String, example: String) throws -> Int {
            guard !rest.isEmpty else {
                throw LayerGrammarError("\(name) needs a width: write \(name)<N> (\(example))")
            }
            let value: Int = try number(rest, "the width of \(name)")
            guard value >= 1 else {
                throw LayerGrammarError("\(name)\(value) has a width below 1")
            }
            return value
        }
        if text == "pool" {
            self = .pool(.max, size: 2)
        } else if let rest = text.stripping("maxpool") ?? text.stripping("avgpool")
            ?? text.stripping("pool")
        {
            let kind: PoolKind = text.hasPrefix("avgpool") ? .average : .max
            let size: Int = try number(rest, "the window of \(text.prefix(while: \.isLetter))")
            guard size >= 1 else { throw LayerGrammarError("a pool window must be at least 1") }
            self = .pool(kind, size: size)
        } else if let rest = text.stripping("dense") {
            self = .dense(try width(rest, "dense", example: "dense1024"))
        } else if !text.hasPrefix("lifconv"), let rest = text.stripping("lif") {
            self = .lif(try width(rest, "lif", example: "lif1000"))
        } else if let rest = text.stripping("conv") ?? text.stripping("lifconv") {
            // conv<N> then any of k<K>, s<S>, p<P>, each once.
            let name = text.hasPrefix("lifconv") ? "lifconv" : "conv"
            let digits = rest.prefix(while: \.isNumber)
            let channels = try width(digits, name, example: name + "128")
            var options: [Character: Int] = [:]
            var tail = rest.dropFirst(digits.count)
            while let letter = tail.first {
                guard "ksp".contains(letter) else {
                    throw LayerGrammarError(
                        "conv options are k<K> (kernel), s<S> (stride) and p<P> (padding); "
                            + "'\(letter)' is none of them")
                }
                guard options[letter] == nil else {
                    throw LayerGrammarError("conv option \(letter) is given twice")
                }
                let value = tail.dropFirst().prefix(while: \.isNumber)
                guard let number = Int(value) else {
                    throw LayerGrammarError("conv option \(letter) needs a number (e.g. k5)")
                }
                options[letter] = number
                tail = tail.dropFirst(1 + value.count)
            }
            let kernel = options["k"] ?? 3
            let stride = options["s"] ?? 1
            guard kernel >= 1, stride >= 1 else {
                throw LayerGrammarError("a conv kernel and stride must be at least 1")
            }
            let padding = options["p"] ?? kernel / 2
            self =
                name == "conv"
                ? .conv(channels, kernel: kernel, stride: stride, padding: padding)
                : .lifConv(channels, kernel: kernel, stride: stride, padding: padding)
        } else if let rest = text.stripping("dropout") {
            let p: Float = try number(rest, "the probability of dropout")
            guard p >= 0, p < 1 else {
                throw LayerGrammarError("dropout\(rest): the probability must be in 0..<1")
            }
            self = .dropout(p)
        } else {
            throw LayerGrammarError(
                "'\(token)' is not a layer; layers are \(Self.grammar)")
        }
    }
}

extension NetworkDescription {
    /// The layers of a comma-separated list (`conv128,conv256,pool,dense1024`); an error names
    /// the token and its position.
    public init(layerList: String) throws {
        let tokens = layerList.split(separator: ",", omittingEmptySubsequences: false)
        self.init(
            layers: try tokens.enumerated().map { index, token in
                do { return try Layer(parsing: String(token)) } catch let error
                    as LayerGrammarError
                {
                    throw SigPropError.configuration(
                        "layer \(index + 1), '\(token)': \(error.message)")
                }
            })
    }
}

/// What is wrong with one token of a layer list.
struct LayerGrammarError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

extension String {
    /// The rest after `prefix`, or nil when the string does not start with it.
    fileprivate func stripping(_ prefix: String) -> Substring? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }
}

// MARK: JSON

/// A description in JSON: `{"layers": ["conv128", "pool", "dense1024"], "activation":
/// "leaky-relu", "dense_norm": "layer", "conv_norm": "instance", "width_multiplier": 1,
/// "fixed_context": false, "ceil_pools": false}`; every key but `layers` may be left out.
extension NetworkDescription: Codable {
    enum CodingKeys: String, CodingKey {
        case layers, activation, preset, spiking
        case denseNorm = "dense_norm"
        case convNorm = "conv_norm"
        case widthMultiplier = "width_multiplier"
        case fixedContext = "fixed_context"
        case ceilPools = "ceil_pools"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let tokens = try container.decode([String].self, forKey: .layers)
        self = try NetworkDescription(layerList: tokens.joined(separator: ","))
        activation =
            try container.decodeIfPresent(Activation.self, forKey: .activation)
            ?? .leakyRelu
        denseNorm = try container.decodeIfPresent(NormKind.self, forKey: .denseNorm) ?? .layer
        convNorm = try container.decodeIfPresent(NormKind.self, forKey: .convNorm) ?? .instance
        widthMultiplier =
            try container.decodeIfPresent(Double.self, forKey: .widthMultiplier) ?? 1
        fixedContext = try container.decodeIfPresent(Bool.self, forKey: .fixedContext) ?? false
        ceilPools = try container.decodeIfPresent(Bool.self, forKey: .ceilPools) ?? false
        preset = try container.decodeIfPresent(String.self, forKey: .preset)
        spiking = try container.decodeIfPresent(SpikingSettings.self, forKey: .spiking) ?? spiking
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(layers.map(\.description), forKey: .layers)
        try container.encode(activation, forKey: .activation)
        try container.encode(denseNorm, forKey: .denseNorm)
        try container.encode(convNorm, forKey: .convNorm)
        try container.encode(widthMultiplier, forKey: .widthMultiplier)
        try container.encode(fixedContext, forKey: .fixedContext)
        try container.encodeIfPresent(preset, forKey: .preset)
        // Written where set, so descriptions without it (and their checkpoints) read as before.
        if ceilPools { try container.encode(ceilPools, forKey: .ceilPools) }
        // Only spiking networks carry the key, so other descriptions read as they always have.
        if isSpiking { try container.encode(spiking, forKey: .spiking) }
    }
}
