import Foundation
import SigProp

/// What `--model` names: a preset, a JSON file of a network description, or a layer list.
enum ModelArgument {
    static func description(_ text: String) throws -> NetworkDescription {
        if let preset = NetworkDescription.preset(text) { return preset }
        if text.hasSuffix(".json") || FileManager.default.fileExists(atPath: text) {
            return try file(text)
        }
        do {
            return try NetworkDescription(layerList: text)
        } catch let error as SigPropError {
            let presets = NetworkDescription.presetNames.joined(separator: ", ")
            throw SigPropError.configuration(
                "--model \(text) is not a preset (\(presets)), a JSON file or a layer list: "
                    + "\(error)")
        }
    }

    static func file(_ path: String) throws -> NetworkDescription {
        let bytes: [UInt8]
        do {
            bytes = try FileSystemError.read(path)
        } catch {
            throw SigPropError.configuration(
                "--model \(path): cannot read the file (\(error.reason)). Give the path of a "
                    + "JSON network description, a preset or a layer list")
        }
        do {
            return try JSONDecoder().decode(NetworkDescription.self, from: Data(bytes))
        } catch let error as SigPropError {
            throw SigPropError.configuration("--model \(path): \(error)")
        } catch {
            throw SigPropError.configuration(
                "--model \(path) is not a network description: \(reason(error)). It needs at "
                    + #"least {"layers": ["conv32", "pool", "dense256"]}"#)
        }
    }

    /// What is wrong with a JSON file, in words rather than a DecodingError's dump.
    static func reason(_ error: Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
                .joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, _): return "it has no \"\(key.stringValue)\" key"
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            let kind =
                "\(type)".hasPrefix("Array")
                ? "a list"
                : type == String.self
                    ? "a string"
                    : type == Bool.self ? "true or false" : "a number"
            return "\"\(path(context))\" must be \(kind)"
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return "it is not valid JSON"
        case .dataCorrupted(let context):
            let valid: [String: [String]] = [
                "activation": Activation.allCases.map(\.rawValue),
                "dense_norm": ["layer", "batch", "none"],
                "conv_norm": ["instance", "batch", "none"],
            ]
            let key = path(context)
            guard let values = valid[key] else { return "\"\(key)\": \(context.debugDescription)" }
            return "\"\(key)\" must be one of \(values.joined(separator: ", "))"
        @unknown default: return "\(error)"
        }
    }
}
