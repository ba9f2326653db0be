import Foundation

/// A training checkpoint in the safetensors format (loadable by Python's `safetensors`):
/// every parameter, every optimizer state tensor (`<parameter>.<state>`, e.g.
/// `block0.weight.m`), every buffer (Forward-Forward's running means), and in the metadata
/// the epochs done, each optimizer's step count, the network description with its input
/// shape and classes, the learning rule, the training options and the data settings (as JSON
/// strings).
public struct Checkpoint {
    public var tensors: [String: GoldenTensor]
    public var metadata: [String: String]

    public static let formatName = "sigprop-checkpoint-1"

    public init(tensors: [String: GoldenTensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    // MARK: Network <-> checkpoint

    /// Everything needed to continue training `network` after `epochs` completed epochs and
    /// `batchesDone` batches of the next (an interrupted epoch), trained on `data`.
    public init(
        network: Network, options: TrainingOptions, epochs: Int, batchesDone: Int = 0,
        data: DataSettings? = nil
    ) throws {
        var tensors: [String: GoldenTensor] = [:]
        for parameter in network.parameters {
            tensors[parameter.name] = GoldenTensor(
                shape: parameter.value.shape,
                values: try parameter.value.device.read(parameter.value))
            for (state, tensor) in parameter.state {
                tensors["\(parameter.name).\(state)"] = GoldenTensor(
                    shape: tensor.shape, values: try tensor.device.read(tensor))
            }
        }
        for buffer in network.buffers {
            tensors[buffer.name] = GoldenTensor(
                shape: buffer.value.shape, values: try buffer.value.device.read(buffer.value))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        self.tensors = tensors
        self.metadata = [
            "format": Self.formatName,
            "epochs": String(epochs),
            "batches_done": String(batchesDone),
            "optimizer_steps": network.optimizers.map { String($0.steps) }.joined(separator: ","),
            "model": String(decoding: try encoder.encode(network.description), as: UTF8.self),
            "input_shape": network.inputShape.map(String.init).joined(separator: ","),
            "classes": String(network.classes),
            "options": String(decoding: try encoder.encode(options), as: UTF8.self),
            "rule": String(decoding: try encoder.encode(network.rule), as: UTF8.self),
        ]
        if let data {
            metadata["data"] = String(decoding: try encoder.encode(data), as: UTF8.self)
        }
    }

    public var epochs: Int {
        get throws {
            guard let text = metadata["epochs"], let value = Int(text), value >= 0 else {
                throw Self.invalid("metadata 'epochs' is missing or not a number")
            }
            return value
        }
    }

    /// Batches of epoch `epochs + 1` already trained (0 at an epoch boundary).
    public var batchesDone: Int {
        get throws {
            guard let value = Int(metadata["batches_done"] ?? "0"), value >= 0 else {
                throw Self.invalid("metadata 'batches_done' is not a number")
            }
            return value
        }
    }

    /// The network the checkpoint holds: its description, input shape and classes.
    public var model: (description: NetworkDescription, inputShape: [Int], classes: Int) {
        get throws {
            if let text = metadata["model"], text.contains("\"kind\"") {
                return try decode(LegacyModelConfig.self, "model").converted
            }
            let shape = (metadata["input_shape"] ?? "").split(separator: ",").compactMap {
                Int($0)
            }
            guard shape.count == 3, let classes = Int(metadata["classes"] ?? "") else {
                throw Self.invalid("metadata 'input_shape' or 'classes' is missing")
            }
            return (try decode(NetworkDescription.self, "model"), shape, classes)
        }
    }

    /// The learning rule; Signal Propagation in checkpoints written before rules were stored.
    public var rule: LearningRule {
        get throws {
            metadata["rule"] == nil ? .signalPropagation : try decode(LearningRule.self, "rule")
        }
    }

    public var options: TrainingOptions {
        get throws { try decode(TrainingOptions.self, "options") }
    }

    /// The data the run trained on; nil in checkpoints written before it was stored.
    public var data: DataSettings? {
        get throws { metadata["data"] == nil ? nil : try decode(DataSettings.self, "data") }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ key: String) throws -> T {
        guard let text = metadata[key],
            let value = try? JSONDecoder().decode(type, from: Data(text.utf8))
        else {
            throw Self.invalid(
                "metadata '\(key)' is missing or not valid JSON for this version of SigProp")
        }
        return value
    }

    /// Loads weights, optimizer state and step counts into `network` (built from `model`).
    public func restore(into network: Network) throws {
        for parameter in network.parameters {
            try load(parameter.name, into: parameter.value)
            for (state, tensor) in parameter.state {
                try load("\(parameter.name).\(state)", into: tensor)
            }
        }
        for buffer in network.buffers { try load(buffer.name, into: buffer.value) }
        let steps = (metadata["optimizer_steps"] ?? "").split(separator: ",").compactMap { Int($0) }
        guard steps.count == network.optimizers.count else {
            throw Self.invalid(
                "metadata 'optimizer_steps' has \(steps.count) entries, the model has "
                    + "\(network.optimizers.count) optimizers"
            )
        }
        for (optimizer, count) in zip(network.optimizers, steps) { optimizer.steps = count }
    }

    private func load(_ name: String, into tensor: Tensor) throws {
        guard let stored = tensors[name] else {
            throw SigPropError.configuration(
                "checkpoint has no tensor '\(name)': it was written for another model or "
                    + "optimizer; resume with the same --model and --optimizer, or start afresh"
            )
        }
        guard stored.shape == tensor.shape else {
            throw SigPropError.configuration(
                "checkpoint tensor '\(name)' has shape \(stored.shape), the model being resumed "
                    + "needs \(tensor.shape)"
            )
        }
        try tensor.device.write(stored.values, to: tensor)
    }

    static func invalid(_ reason: String) -> SigPropError {
        SigPropError.configuration("not a usable SigProp checkpoint: \(reason)")
    }

    // MARK: safetensors

    /// The file's bytes: u64 little-endian header length, the JSON header (padded with spaces
    /// to 8 bytes), then each tensor's float32 little-endian data in header order.
    public func serialized() throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let tensor = tensors[name]!
            let bytes = tensor.values.count * 4
            header[name] = [
                "dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, offset + bytes],
            ]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var data = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        for name in names {
            // X86 and ARM are little-endian.
            tensors[name]!.values.withUnsafeBytes { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Parses safetensors bytes; anything truncated, foreign or inconsistent is an error
    /// naming what is wrong.
    public init(safetensors data: Data, path: String) throws {
        func bad(_ reason: String) -> SigPropError {
            SigPropError.configuration(
                "checkpoint \(path) is not a valid safetensors file: \(reason). Use a "
                    + "last.safetensors written by train, or start afresh without --resume"
            )
        }
        guard data.count >= 8 else {
            throw bad("it is \(data.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = data.prefix(8).withUnsafeBytes {
            UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))
        }
        guard headerLength <= UInt64(data.count - 8) else {
            throw bad(
                "the header claims \(headerLength) bytes but the file has \(data.count - 8) after "
                    + "the length (truncated?)"
            )
        }
        let headerEnd = 8 + Int(headerLength)
        guard
            let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<headerEnd))
                as? [String: Any]
        else {
            throw bad("the header is not a JSON object")
        }
        let payload = data.subdata(in: headerEnd..<data.count)
        var tensors: [String: GoldenTensor] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let values = value as? [String: String] else {
                    throw bad("__metadata__ is not a string map")
                }
                metadata = values
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                let shape = entry["shape"] as? [Int],
                let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
            else {
                throw bad("tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard dtype == "F32" else {
                throw bad("tensor '\(name)' is \(dtype); SigProp stores F32")
            }
            let (begin, end) = (offsets[0], offsets[1])
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o || d < 0)
            }
            guard !overflow, begin >= 0, begin <= end, end <= payload.count,
                end - begin == count * 4
            else {
                throw bad(
                    "tensor '\(name)' of shape \(shape) has data offsets \(offsets) outside the "
                        + "\(payload.count) data bytes or of the wrong size (truncated?)"
                )
            }
            let values = payload.subdata(in: begin..<end).withUnsafeBytes { raw in
                (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
            }
            tensors[name] = GoldenTensor(shape: shape, values: values)
        }
        guard metadata["format"] == Self.formatName else {
            throw bad(
                "its metadata does not say format \(Self.formatName) (written by another program?)")
        }
        self.init(tensors: tensors, metadata: metadata)
    }

    public init(contentsOf url: URL) throws {
        let bytes: [UInt8]
        do { bytes = try FileSystemError.read(url.path) } catch {
            throw SigPropError.configuration(
                "--resume \(url.path): cannot read the checkpoint: \(error.reason). Give --resume "
                    + "a checkpoint file (train writes <checkpoint-dir>/last.safetensors)")
        }
        try self.init(safetensors: Data(bytes), path: url.path)
    }

    /// Writes atomically (`AtomicFile`): a crash at any moment leaves either the old
    /// checkpoint or the new one, and the next write deletes temporaries of killed writers.
    public func write(to url: URL) throws {
        let data = try serialized()
        do {
            try AtomicFile.write(data, to: url)
        } catch .folder(let path, let reason) {
            throw OutputFiles.problem(
                flag: "--checkpoint-dir", path: path, action: "create the folder", reason: reason)
        } catch .temporary(let path, let reason) {
            throw OutputFiles.problem(
                flag: "--checkpoint-dir", path: url.deletingLastPathComponent().path,
                action: "create \(path)", reason: reason)
        } catch .write(let reason) {
            throw OutputFiles.problem(
                flag: "--checkpoint-dir", path: url.deletingLastPathComponent().path,
                action: "write the checkpoint \(url.lastPathComponent)", reason: reason,
                fix: "The previous checkpoint there is untouched")
        }
    }
}
