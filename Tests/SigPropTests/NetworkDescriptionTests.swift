import Foundation
import Testing

@testable import SigProp

/// Networks as data: the layer grammar, the presets, the checks of a description against its
/// input, and the networks written before descriptions existed.
@Suite struct NetworkDescriptionTests {
    typealias Layer = NetworkDescription.Layer

    @Test func theGrammarReadsEveryLayerAndWritesItBack() throws {
        let cases: [(String, Layer)] = [
            ("dense1024", .dense(1024)),
            ("conv128", .conv(128)),
            ("conv64k5s2p2", .conv(64, kernel: 5, stride: 2, padding: 2)),
            ("conv8k5", .conv(8, kernel: 5, stride: 1, padding: 2)),
            ("conv8s2", .conv(8, kernel: 3, stride: 2, padding: 1)),
            ("conv8p0", .conv(8, kernel: 3, stride: 1, padding: 0)),
            ("pool", .pool(.max, size: 2)),
            ("maxpool3", .pool(.max, size: 3)),
            ("avgpool2", .pool(.average, size: 2)),
            ("dropout0.25", .dropout(0.25)),
        ]
        for (text, layer) in cases {
            #expect(try Layer(parsing: text) == layer, "\(text)")
            #expect(try Layer(parsing: layer.description) == layer, "\(layer.description)")
        }
        #expect(try Layer(parsing: " Conv16K5 ") == .conv(16, kernel: 5, stride: 1, padding: 2))
        #expect(Layer("maxpool2")?.description == "pool")
    }

    /// Each bad layer is refused with its position in the list and what to write instead.
    @Test(arguments: [
        ("dense512,convolution64", "layer 2, 'convolution64'"),
        ("dense0", "width below 1"),
        ("dense", "dense<N>"),
        ("conv32,conv", "conv<N>"),
        ("conv32x3", "'x' is none of them"),
        ("conv32k3k5", "given twice"),
        ("conv32,dropout1.5", "0..<1"),
        ("dense64,,dense64", "layer 2, ''"),
        ("maxpool0", "at least 1"),
    ])
    func badLayersAreRefusedNamingTheLayer(_ list: String, _ expected: String) {
        #expect {
            _ = try NetworkDescription(layerList: list)
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    @Test func thePresetsAreTheirPublishedLayerLists() throws {
        #expect(
            NetworkDescription.vgg8b.layerList
                == "conv128,conv256,pool,conv256,conv512,pool,conv512,pool,conv512,pool,dense1024")
        #expect(NetworkDescription.cnn.layerList == "conv32,conv64,pool,conv128,pool,dense1024")
        #expect(NetworkDescription.mlp(hiddenLayers: 2, width: 8).layerList == "dense8,dense8")
        for name in NetworkDescription.presetNames {
            let preset = try #require(NetworkDescription.preset(name))
            #expect(preset.preset == name)
            // Every preset fits Fashion-MNIST's and CIFAR-10's images.
            for input in [[1, 28, 28], [3, 32, 32]] {
                _ = try NetworkPlan(preset, inputShape: input, classes: 10)
            }
        }
        #expect(NetworkDescription.preset("resnet50") == nil)
    }

    @Test func theWidthMultiplierScalesEveryLayerButTheOutput() throws {
        var vgg = NetworkDescription.vgg8b
        vgg.widthMultiplier = 0.25
        let plan = try NetworkPlan(vgg, inputShape: [1, 28, 28], classes: 10)
        #expect(
            plan.stages.map(\.layerName)
                == [
                    "conv32", "conv64", "conv64", "conv128", "conv128", "conv128", "dense256",
                    "dense10",
                ])
        #expect(plan.stages.map(\.handedOnShape).last == [10])
        vgg.widthMultiplier = 0.0001
        #expect(
            try NetworkPlan(vgg, inputShape: [1, 28, 28], classes: 10).stages[0].layerName
                == "conv1")
    }

    /// `--dropout` places dropout after every learning block but the last, after its pooling.
    @Test func dropoutFollowsEachBlockButTheLast() {
        #expect(
            NetworkDescription.cnn.withDropout(0.1).layerList
                == "conv32,dropout0.1,conv64,pool,dropout0.1,conv128,pool,dropout0.1,dense1024")
        #expect(NetworkDescription.mlp(hiddenLayers: 1).withDropout(0.5).layerList == "dense1024")
        #expect(NetworkDescription.cnn.withDropout(0) == .cnn)
    }

    /// Descriptions that cannot work on their input are refused before anything is built,
    /// naming the layer and its position.
    @Test(arguments: [
        ("conv8k7p0", [1, 6, 6], "layer 1, 'conv8k7p0', has a 7x7 kernel, larger than its 6x6"),
        ("conv8,pool,pool,pool", [1, 6, 6], "layer 4, 'pool', shrinks its 1x1 input to nothing"),
        ("dense8,conv8", [1, 6, 6], "layer 2, 'conv8', follows a dense layer"),
        ("dense8,pool", [1, 6, 6], "layer 2, 'pool', follows a dense layer"),
        ("pool,dense8", [1, 6, 6], "layer 1, 'pool', comes before any dense or conv layer"),
        ("dropout0.5", [1, 6, 6], "no dense or conv layer"),
        ("", [1, 6, 6], "not a layer"),
    ])
    func descriptionsThatCannotWorkAreRefused(_ list: String, _ input: [Int], _ expected: String) {
        #expect {
            let description = try NetworkDescription(layerList: list)
            _ = try NetworkPlan(description, inputShape: input, classes: 4)
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    /// On 28x28 images the vgg presets' pools keep the edges (7x7 to 4x4 to 2x2); without
    /// `ceilPools`, as in descriptions written before it, they drop them (7x7 to 3x3 to 1x1).
    @Test func theVGGPresetsPoolTheEdgesOfImagesTheirPoolsDoNotDivide() throws {
        let handedOn = { (description: NetworkDescription) in
            try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10).stages.map(
                \.handedOnShape)
        }
        let vgg8b = NetworkDescription.vgg8b
        #expect(vgg8b.ceilPools)
        #expect(try handedOn(vgg8b)[4...5] == [[512, 4, 4], [512, 2, 2]])
        var floor = vgg8b
        floor.ceilPools = false
        #expect(try handedOn(floor)[4...5] == [[512, 3, 3], [512, 1, 1]])
        let plan = { (description: NetworkDescription) in
            try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10)
        }
        #expect(try plan(vgg8b).poolsDroppingEdges.isEmpty)
        #expect(
            try plan(floor).poolsDroppingEdges == [
                "layer 8, 'pool' (7x7 to 3x3)", "layer 10, 'pool' (3x3 to 1x1)",
            ])
        let written = try JSONEncoder().encode(floor)
        #expect(!String(decoding: written, as: UTF8.self).contains("ceil_pools"))
        #expect(try JSONDecoder().decode(NetworkDescription.self, from: written) == floor)
        // 32x32 images: both modes pool alike.
        #expect(
            try NetworkPlan(vgg8b, inputShape: [3, 32, 32], classes: 10).stages.map(\.handedOnShape)
                == NetworkPlan(floor, inputShape: [3, 32, 32], classes: 10).stages.map(
                    \.handedOnShape))
    }

    @Test func aDescriptionRoundTripsThroughJSON() throws {
        var description = NetworkDescription.vgg6b.withDropout(0.2)
        description.widthMultiplier = 0.5
        description.convNorm = .batch
        description.activation = .tanh
        description.fixedContext = true
        let json = try JSONEncoder().encode(description)
        #expect(try JSONDecoder().decode(NetworkDescription.self, from: json) == description)
        // Everything but the layers has a default.
        let minimal = try JSONDecoder().decode(
            NetworkDescription.self,
            from: Data(#"{"layers": ["conv16k5s2", "avgpool2", "dense32"]}"#.utf8))
        #expect(
            minimal
                == NetworkDescription(
                    layers: [
                        .conv(16, kernel: 5, stride: 2, padding: 2), .pool(.average), .dense(32),
                    ]))
        #expect(throws: SigPropError.self) {
            try JSONDecoder().decode(
                NetworkDescription.self, from: Data(#"{"layers": ["dense32", "lstm8"]}"#.utf8))
        }
    }

    // MARK: Networks written before descriptions

    /// The presets build the networks that the two fixed architectures built, value for value:
    /// the same parameters, in the same order, drawn from the generator in the same order.
    /// The fingerprints (FNV-1a of each tensor's bits at initialisation) were written by the
    /// code before descriptions; initialisation uses no BLAS, so they hold on every machine.
    @Test func thePresetsInitialiseAsTheFixedArchitecturesDid() throws {
        let url = try #require(
            Bundle.module.url(
                forResource: "init-fingerprints", withExtension: "json",
                subdirectory: "Fixtures/legacy"))
        let expected = try JSONDecoder().decode(
            [String: [[String: String]]].self, from: Data(contentsOf: url))
        let networks: [String: (TestNetwork, UInt64)] = [
            "mlp": (TestNetwork(description: .mlp(), inputShape: [1, 28, 28], classes: 10), 1),
            "cnn": (TestNetwork(description: .cnn, inputShape: [1, 28, 28], classes: 10), 1),
            "mlp_dropout": (
                TestNetwork(
                    description: NetworkDescription.mlp(hiddenLayers: 4, width: 32).withDropout(
                        0.1),
                    inputShape: [3, 5, 7], classes: 7
                ).with { $0.fixedContext = true }, 7
            ),
            "cnn_cifar": (
                TestNetwork(
                    description: NetworkDescription.cnn.withDropout(0.2), inputShape: [3, 32, 32],
                    classes: 10
                ).with { $0.convNorm = .batch }, 3
            ),
        ]
        #expect(Set(networks.keys) == Set(expected.keys))
        for (name, (config, seed)) in networks {
            let network = try config.build(try TestBackend.cpu.device(), seed: seed)
            let fingerprints = try network.parameters.map { parameter in
                var hash: UInt64 = 0xcbf2_9ce4_8422_2325
                for value in try parameter.value.device.read(parameter.value) {
                    hash = (hash ^ UInt64(value.bitPattern)) &* 0x100_0000_01b3
                }
                return [
                    "name": parameter.name,
                    "shape": parameter.value.shape.map(String.init).joined(separator: "x"),
                    "fnv": String(hash, radix: 16),
                ]
            }
            #expect(fingerprints == expected[name], "\(name)")
        }
    }

    /// A checkpoint written before descriptions resumes: its model converts to the preset,
    /// and its tensors load into the network built from it.
    @Test func aCheckpointWrittenBeforeDescriptionsResumes() throws {
        let url = try #require(
            Bundle.module.url(
                forResource: "mlp-checkpoint", withExtension: "safetensors",
                subdirectory: "Fixtures/legacy"))
        let checkpoint = try Checkpoint(contentsOf: url)
        let model = try checkpoint.model
        #expect(model.description == .mlp(hiddenLayers: 2, width: 6))
        #expect(model.inputShape == [1, 4, 4] && model.classes == 3)
        let network = try Network(
            model.description, inputShape: model.inputShape, classes: model.classes,
            device: try TestBackend.cpu.device(), optimizer: try checkpoint.options.optimizer,
            seed: 99)
        try checkpoint.restore(into: network)
        let stored = try #require(checkpoint.tensors["block1.weight"])
        #expect(
            try network.device.read(network.hidden[0].optimizer.parameters[0].value)
                == stored.values)

        let cnnURL = try #require(
            Bundle.module.url(
                forResource: "cnn-model", withExtension: "json", subdirectory: "Fixtures/legacy"))
        let legacy = try JSONDecoder().decode(
            LegacyModelConfig.self, from: Data(contentsOf: cnnURL))
        #expect(legacy.converted.description == NetworkDescription.cnn.withDropout(0.25))
        #expect(legacy.converted.inputShape == [1, 28, 28])
    }
}
