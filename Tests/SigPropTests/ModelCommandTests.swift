import Foundation
import Testing

@testable import SigProp

/// `train --model` with presets, layer lists and JSON files, `--describe`, and descriptions
/// that cannot work: refused before any training, naming the layer. Part of the serialized
/// process suite.
extension ProcessTests {
    static func model(_ data: URL, _ checkpoints: URL, _ model: [String], epochs: Int = 1)
        -> [String]
    {
        model + [
            "--epochs", String(epochs), "--batch-size", "16", "--data-dir", data.path,
            "--checkpoint-dir", checkpoints.path,
        ]
    }

    /// Resumes the checkpoint `last` for a second epoch, which must complete; then, where
    /// `conflicting` flags are given, with them for a third, which must be refused as a usage
    /// error naming `conflict`.
    static func expectResumes(
        _ data: URL, _ checkpoints: URL, from last: String, refusing conflicting: [String] = [],
        naming conflict: String = "", sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let resumed = try run(model(data, checkpoints, ["--resume", last], epochs: 2))
        #expect(resumed.status == 0, "\(resumed.output)", sourceLocation: sourceLocation)
        #expect(
            resumed.output.contains("epoch 2/2"), "\(resumed.output)",
            sourceLocation: sourceLocation)
        guard !conflicting.isEmpty else { return }
        let other = try run(
            model(data, checkpoints, ["--resume", last] + conflicting, epochs: 3))
        #expect(other.status == 64, "\(other.output)", sourceLocation: sourceLocation)
        #expect(other.output.contains(conflict), "\(other.output)", sourceLocation: sourceLocation)
    }

    /// A layer list trains and resumes from its checkpoint without repeating it; another list
    /// on resume is a conflict.
    @Test func aLayerListTrainsAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let list = ["--model", "conv8k5s2p2,conv8,avgpool2,dense16"]
        let (status, output) = try Self.run(Self.model(data, checkpoints, list))
        #expect(status == 0, "\(output)")
        #expect(output.contains("model: conv8k5s2,conv8,avgpool2,dense16, 3 learning blocks"))
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--model", "dense16"],
            naming: "--model/--hidden-layers/--width/--dropout dense16")
    }

    /// A pool that drops an edge is warned of; `--ceil-pools` pools it, is stored in the
    /// checkpoint, and changing it on resume is a conflict.
    @Test func ceilPoolsKeepTheEdgesAndAreStored() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let list = ["--model", "conv4,maxpool3,dense8"]
        let described = try Self.run(Self.model(data, checkpoints, list + ["--describe"]))
        #expect(described.status == 0, "\(described.output)")
        #expect(
            described.output.contains(
                "warning: layer 2, 'maxpool3' (8x8 to 2x2) drops the edge"), "\(described.output)")
        let (status, output) = try Self.run(Self.model(data, checkpoints, list + ["--ceil-pools"]))
        #expect(status == 0 && !output.contains("warning"), "\(output)")
        let last = checkpoints.appendingPathComponent("last.safetensors").path
        let model = try Checkpoint(contentsOf: URL(fileURLWithPath: last)).model
        #expect(model.description.ceilPools)
        #expect(
            try NetworkPlan(model.description, inputShape: model.inputShape, classes: model.classes)
                .stages[0].handedOnShape == [4, 3, 3])
        try Self.expectResumes(
            data, checkpoints, from: last, refusing: ["--no-ceil-pools"],
            naming: "--[no-]ceil-pools false (checkpoint: true)")
    }

    /// A JSON description with its own norms and width multiplier.
    @Test func aJSONDescriptionTrains() throws {
        let (data, checkpoints) = try Self.workspace()
        let folder = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("net.json")
        try Data(
            #"{"layers": ["conv16", "pool", "dense32"], "conv_norm": "batch", "width_multiplier": 0.5}"#
                .utf8
        ).write(to: file)
        let (status, output) = try Self.run(Self.model(data, checkpoints, ["--model", file.path]))
        #expect(status == 0, "\(output)")
        let checkpoint = try Checkpoint(
            contentsOf: checkpoints.appendingPathComponent("last.safetensors"))
        let model = try checkpoint.model
        #expect(model.description.convNorm == .batch && model.description.widthMultiplier == 0.5)
        #expect(model.inputShape == [1, 8, 8] && model.classes == 10)
        #expect(checkpoint.tensors["block0.weight"]?.shape == [8, 1, 3, 3])
    }

    /// `--describe` prints the blocks and the memory, trains nothing and writes nothing.
    @Test func describePrintsTheBlocksAndExits() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.model(data, checkpoints, ["--model", "cnn", "--describe"]))
        #expect(status == 0, "\(output)")
        for expected in [
            "model: cnn on 1x8x8 input, 10 classes; 4 learning blocks", "block1 (signal)",
            "conv128 pool flatten", "total", "memory (pipelined schedule, 5 batches of 16",
        ] {
            #expect(output.contains(expected), "\(expected) missing: \(output)")
        }
        #expect(!output.contains("epoch 1"))
        #expect(!FileManager.default.fileExists(atPath: checkpoints.path))
    }

    /// Models that cannot work are usage errors, before the network is built: a bad token
    /// before the data is loaded; a description too deep for the images once it is.
    @Test(arguments: [
        (["--model", "dense16,lstm4"], "layer 2, 'lstm4'", false),
        (["--model", "missing.json"], "--model missing.json: cannot read the file", false),
        (["--model", "cnn", "--width", "8"], "--hidden-layers and --width shape the mlp", true),
        (["--model", "vgg8b"], "layer 10, 'pool', shrinks its 1x1 input to nothing", true),
        (["--model", "conv8k9p0"], "has a 9x9 kernel, larger than its 8x8 input", true),
    ])
    func modelsThatCannotWorkAreRefused(
        _ flags: [String], _ expected: String, _ afterData: Bool
    ) throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(Self.model(data, checkpoints, flags))
        #expect(status == 64, "\(output)")
        #expect(output.contains(expected), "\(output)")
        #expect(output.contains("data:") == false || afterData, "\(output)")
        #expect(!output.contains("epoch 1"), "\(output)")
    }

    /// A JSON file that is not a description: the message says what is wrong in words.
    @Test(arguments: [
        ("not json", "it is not valid JSON"),
        (#"{"layer": ["conv8"]}"#, #"it has no "layers" key"#),
        (#"{"layers": "conv8"}"#, #""layers" must be a list"#),
        (#"{"layers": ["conv8"], "conv_norm": "group"}"#, #""conv_norm" must be one of instance"#),
        (#"{"layers": ["conv8", "poool"]}"#, "layer 2, 'poool'"),
    ])
    func badJSONDescriptionsAreRefusedInWords(_ json: String, _ expected: String) throws {
        let (data, checkpoints) = try Self.workspace()
        let folder = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("net.json")
        try Data(json.utf8).write(to: file)
        let (status, output) = try Self.run(Self.model(data, checkpoints, ["--model", file.path]))
        #expect(status == 64, "\(output)")
        #expect(output.contains(expected), "\(output)")
        #expect(!output.contains("DecodingError"), "\(output)")
    }
}
