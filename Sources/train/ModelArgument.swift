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
                "--model \(path) is not a network description: \(error). It needs at least "
                    + #"{"layers": ["conv32", "pool", "dense256"]}"#)
        }
    }
}
