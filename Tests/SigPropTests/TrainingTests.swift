import Foundation
import Testing

@testable import SigProp

/// Training end to end on small synthetic data, and checkpoints.
@Suite struct TrainingTests {
    /// Four classes of `shape` images (6x6 by default), each a class-specific pattern (the
    /// same in every set) plus noise drawn from `seed`.
    static func syntheticData(count: Int, seed: UInt64, shape: [Int] = [1, 6, 6]) throws
        -> Dataset
    {
        var patternGenerator = SeededGenerator(seed: 0)
        let features = shape.reduce(1, *)
        let patterns = (0..<4).map { _ in patternGenerator.uniform(features, in: -1...1) }
        var generator = SeededGenerator(seed: seed)
        var images: [Float] = []
        var labels: [Int32] = []
        for index in 0..<count {
            let label = index % 4
            images += patterns[label].map { $0 + Float.random(in: -0.5...0.5, using: &generator) }
            labels.append(Int32(label))
        }
        return try Dataset(
            images: images, labels: labels, channels: shape[0], height: shape[1], width: shape[2],
            classes: 4)
    }

    static func network(_ device: Device, width: Int = 16, seed: UInt64 = 3) throws -> Network {
        try TestNetwork.mlp(width: width).build(device, seed: seed)
    }

    /// The metrics of the last of `epochs` epochs of `config` on 512 synthetic samples
    /// (batch 32, rate 0.05 of `optimizer`, no validation split), tested on 256 others.
    static func lastEpoch(
        of config: TestNetwork, optimizer: OptimizerSettings, epochs: Int, on device: Device
    ) throws -> EpochMetrics {
        var options = TrainingOptions()
        options.optimizer = optimizer
        options.optimizer.learningRate = 0.05
        options.batchSize = 32
        options.validation = nil
        options.epochs = epochs
        let network = try config.build(device, optimizer: options.optimizer, seed: 2)
        let trainer = try Trainer(
            network: network, options: options,
            train: try syntheticData(count: 512, seed: 1),
            test: try syntheticData(count: 256, seed: 2))
        var last: EpochMetrics?
        for epoch in 0..<epochs {
            guard case .completed(let metrics) = try trainer.runEpoch(epoch) else {
                throw SigPropError.configuration("epoch \(epoch + 1) did not complete")
            }
            last = metrics
        }
        return try #require(last)
    }

    /// Every parameter with its optimizer state, then every buffer.
    static func state(_ network: Network) throws -> [Float] {
        try
            (network.parameters.flatMap { parameter in
                [parameter.value] + parameter.state.keys.sorted().map { parameter.state[$0]! }
            } + network.buffers.map(\.value)).flatMap { try $0.device.read($0) }
    }

    @Test(arguments: TestBackend.available)
    func trainingLearnsEveryReadout(_ backend: TestBackend) throws {
        let device = try backend.device()
        var options = TrainingOptions()
        options.batchSize = 32
        options.optimizer.learningRate = 2e-3
        options.validation = .count(128)
        let trainer = try Trainer(
            network: try Self.network(device), options: options,
            train: try Self.syntheticData(count: 512, seed: 1),
            test: try Self.syntheticData(count: 128, seed: 2))
        var metrics: EpochMetrics?
        for epoch in 0..<3 {
            guard case .completed(let result) = try trainer.runEpoch(epoch) else {
                Issue.record("epoch \(epoch) did not complete")
                return
            }
            metrics = result
        }
        let last = try #require(metrics)
        #expect(last.testAccuracy > 0.9, "adaptive readout accuracy \(last.testAccuracy)")
        #expect(
            last.readoutAccuracies["output"]! > 0.5,
            "output layer accuracy \(last.readoutAccuracies)")
        #expect(last.blockLosses.count == 3 && last.blockLosses.allSatisfy(\.isFinite))
        #expect(
            ReadoutChoice.all(blockCount: 3).map(\.description).contains(last.adaptiveReadout))
    }

    /// The schedules' rates: multi-step decay at its milestones, cosine annealing as PyTorch's
    /// CosineAnnealingLR stepped per epoch, and Forward-Forward's linear cooldown as its
    /// reimplementation counts epochs (from 0).
    @Test func learningRateSchedulesGiveTheirRates() {
        var settings = OptimizerSettings()
        settings.learningRate = 1
        settings.milestones = [2]
        #expect((0..<4).map { settings.learningRate(epoch: $0, of: 4) } == [1, 1, 0.1, 0.1])
        settings.milestones = []
        settings.cosineFloor = 0
        expectClose(
            (0..<4).map { settings.learningRate(epoch: $0, of: 4) },
            [1, 0.853_553_4, 0.5, 0.146_446_6], "cosine to 0")
        settings.cosineFloor = 0.5
        expectClose(
            (0..<3).map { settings.learningRate(epoch: $0, of: 3) }, [1, 0.875, 0.625],
            "cosine to 0.5")
        settings.cosineFloor = nil
        settings.linearCooldown = true
        expectClose(
            (0..<5).map { settings.learningRate(epoch: $0, of: 5) }, [1, 1, 1, 1.2, 0.8],
            "linear cooldown")
    }

    /// The model line states the schedule as the rates above follow it.
    @Test func schedulesAreSummarisedInWords() {
        var settings = OptimizerSettings()
        #expect(settings.scheduleSummary(epochs: 10) == "lr 0.0005")
        settings.milestones = [60, 90]
        #expect(settings.scheduleSummary(epochs: 100) == "lr 0.0005, x0.1 after epochs 60, 90")
        #expect(settings.scheduleSummary(epochs: 70) == "lr 0.0005, x0.1 after epochs 60")
        #expect(settings.scheduleSummary(epochs: 50) == "lr 0.0005")
        settings.cosineFloor = 0
        #expect(settings.scheduleSummary(epochs: 10) == "lr 0.0005, cosine to 0.0 over 10 epochs")
        settings.cosineFloor = nil
        settings.linearCooldown = true
        #expect(
            settings.scheduleSummary(epochs: 5)
                == "lr 0.0005, linear cooldown after epoch 3")
    }

    /// The trainer steps every block with the epoch's rate: a milestone that sets it to 0
    /// freezes every parameter of every block for the epochs after it.
    @Test(arguments: TestBackend.available)
    func theScheduleStepsEveryBlock(_ backend: TestBackend) throws {
        let device = try backend.device()
        var options = TrainingOptions()
        options.batchSize = 32
        options.epochs = 2
        options.optimizer.milestones = [1]
        options.optimizer.gamma = 0
        let network = try Self.network(device)
        let trainer = try Trainer(
            network: network, options: options, train: try Self.syntheticData(count: 128, seed: 1),
            test: try Self.syntheticData(count: 32, seed: 2))
        func values() throws -> [[Float]] {
            try network.parameters.map { try device.read($0.value) }
        }
        func rate(_ outcome: Trainer.EpochOutcome) -> Double? {
            guard case .completed(let metrics) = outcome else { return nil }
            return metrics.learningRate
        }
        let initial = try values()
        #expect(rate(try trainer.runEpoch(0)) == Double(Float(5e-4)), "epoch 1's metrics")
        let afterFirst = try values()
        #expect(rate(try trainer.runEpoch(1)) == 0, "epoch 2's metrics")
        for (index, parameter) in network.parameters.enumerated() {
            #expect(afterFirst[index] != initial[index], "\(parameter.name) learned in epoch 1")
        }
        #expect(try values() == afterFirst, "a rate of 0 in epoch 2 left every parameter as it was")
    }

    /// A checkpoint restores weights, optimizer moments and step counts exactly: training on
    /// from it gives bit-identical weights to training on without it.
    @Test(arguments: TestBackend.available)
    func checkpointResumesExactly(_ backend: TestBackend) throws {
        let device = try backend.device()
        let data = try Self.syntheticData(count: 64, seed: 4)
        let batches = [Array(0..<16), Array(16..<32), Array(32..<48)]
        func step(_ network: Network, _ indices: [Int]) throws {
            let (images, labels) = data.batch(indices)
            let pipeline = try Pipeline(
                network: network, schedule: Schedule(.sequential), batchSize: indices.count)
            _ = try pipeline.submit(
                images: images, labels: labels, loss: LocalLoss(), learningRate: 1e-3)
        }
        let original = try Self.network(device)
        try step(original, batches[0])
        try step(original, batches[1])
        let bytes = try Checkpoint(network: original, options: TrainingOptions(), epochs: 1)
            .serialized()
        let loaded = try Checkpoint(safetensors: bytes, path: "memory")
        #expect(try loaded.epochs == 1)
        #expect(try loaded.model.description == original.description)
        #expect(try loaded.model.inputShape == original.inputShape)
        #expect(try loaded.model.classes == original.classes)

        let resumed = try Self.network(device, seed: 99)  // other initial weights, all overwritten
        try loaded.restore(into: resumed)
        #expect(try Self.state(resumed) == Self.state(original))
        #expect(resumed.optimizers.map(\.steps) == original.optimizers.map(\.steps))
        try step(original, batches[2])
        try step(resumed, batches[2])
        #expect(try Self.state(resumed) == Self.state(original))
    }

    /// Under the other rules too: a checkpoint holds the rule and the state they keep besides
    /// weights (Forward-Forward's running means, PEPITA's feedback matrix), and training on
    /// from it gives the numbers of training on without it.
    @Test(
        arguments: TestBackend.available,
        [
            TestNetwork.forwardForward([12, 8]), TestNetwork.pepita([12]),
            TestNetwork.pepita([12, 8]).with(
                rule: LearningRule(.pepita, mirroring: FeedbackMirroring())),
            TestNetwork.mlp(hiddenLayers: 2, width: 12).with(
                rule: LearningRule(.efp, errorFirstPass: .learn)),
            TestNetwork.spiking("lif12,lif8", learning: .surrogate, encoding: .rate).with {
                $0.spiking.learnBeta = true
                $0.spiking.learnThreshold = true
            },
        ])
    func checkpointResumesExactlyUnderEveryRule(_ backend: TestBackend, _ config: TestNetwork)
        throws
    {
        let device = try backend.device()
        let data = try Self.syntheticData(count: 64, seed: 4)
        let settings = LearningRule.pepitaOptimizer
        func step(_ network: Network, _ indices: [Int]) throws {
            let (images, labels) = data.batch(indices)
            let pipeline = try Pipeline(
                network: network, schedule: Schedule(.sequential), batchSize: indices.count)
            _ = try pipeline.submit(
                images: images, labels: labels, loss: LocalLoss(), learningRate: 1e-2,
                generator: SeededGenerator(seed: UInt64(indices[0])))
            _ = try pipeline.drain()
        }
        let original = try config.build(device, optimizer: settings, seed: 5)
        #expect(
            !original.buffers.isEmpty || config.rule.name == .efp || config.description.isSpiking)
        try step(original, Array(0..<16))
        try step(original, Array(16..<32))
        let bytes = try Checkpoint(network: original, options: TrainingOptions(), epochs: 1)
            .serialized()
        let loaded = try Checkpoint(safetensors: bytes, path: "memory")
        #expect(try loaded.rule == original.rule)
        #expect(try loaded.model.description == original.description)
        for buffer in original.buffers {
            #expect(loaded.tensors[buffer.name]?.shape == buffer.value.shape)
        }
        let resumed = try config.build(device, optimizer: settings, seed: 77)
        try loaded.restore(into: resumed)
        #expect(try Self.state(resumed) == Self.state(original))
        try step(original, Array(32..<48))
        try step(resumed, Array(32..<48))
        #expect(try Self.state(resumed) == Self.state(original))
    }

    /// Ctrl-C in the middle of an epoch: the checkpoint then written, resumed, ends the epoch
    /// with the weights of an uninterrupted run (augmentation and dropout draws included).
    @Test(arguments: TestBackend.available)
    func interruptedEpochResumesExactly(_ backend: TestBackend) throws {
        let device = try backend.device()
        let (train, test) = (
            try Self.syntheticData(count: 256, seed: 5), try Self.syntheticData(count: 32, seed: 6)
        )
        var options = TrainingOptions()
        options.batchSize = 32
        options.augmentation.horizontalFlip = true
        options.augmentation.cropPadding = 1
        func network() throws -> Network {
            try TestNetwork(description: NetworkDescription.mlp(width: 16).withDropout(0.1))
                .build(device, optimizer: options.optimizer, seed: 8)
        }
        let uninterrupted = try network()
        _ = try Trainer(network: uninterrupted, options: options, train: train, test: test)
            .runEpoch(0)

        let first = try network()
        var asked = 0
        let outcome = try Trainer(network: first, options: options, train: train, test: test)
            .runEpoch(
                0,
                shouldStop: {
                    asked += 1
                    return asked > 3
                })
        guard case .interrupted(let done) = outcome else {
            Issue.record("the epoch was not interrupted")
            return
        }
        #expect(done == 3)
        let checkpoint = try Checkpoint(
            safetensors: try Checkpoint(
                network: first, options: options, epochs: 0, batchesDone: done
            ).serialized(),
            path: "memory")
        #expect(try checkpoint.batchesDone == 3)
        let resumed = try network()
        try checkpoint.restore(into: resumed)
        _ = try Trainer(network: resumed, options: options, train: train, test: test).runEpoch(
            0, startBatch: try checkpoint.batchesDone)
        #expect(try Self.state(resumed) == Self.state(uninterrupted))
    }

    /// The soak: 20 short epochs with the pipelined schedule, trace off, on every backend side
    /// by side. Device memory in use is the same after every epoch (nothing kept per batch or
    /// epoch); resident memory is checked in a process of its own (ProcessTests), since tests
    /// running in parallel share this one. The OpenCL weights stay within float rounding
    /// of the CPU's: Adam turns rounding-sized differences in tiny gradients into lr-sized
    /// steps, so "rounding" is measured, not assumed: a second CPU run whose initial weights
    /// are one ulp away gives the gap that rounding alone opens, epoch by epoch, and the
    /// OpenCL gap must stay within a small factor of it.
    @Test func soakOfTwentyEpochsKeepsMemoryFlatAndBackendsTogether() throws {
        // Devices of their own: the shared test devices hold other tests' tensors meanwhile.
        let devices =
            [try Device.cpu(), try Device.cpu()]
            + (try TestBackend.openCLEntries.first.map { [try Device.opencl($0)] } ?? [])
        var options = TrainingOptions()
        options.batchSize = 32
        let trainers = try devices.map { device in
            try Trainer(
                network: try Self.network(device), options: options,
                train: try Self.syntheticData(count: 256, seed: 9),
                test: try Self.syntheticData(count: 64, seed: 10), schedule: Schedule(.pipelined))
        }
        for parameter in trainers[1].network.parameters {
            try devices[1].write(
                try devices[1].read(parameter.value).map(\.nextUp), to: parameter.value)
        }
        func gap(_ a: [Float], _ b: [Float]) -> Double {
            let difference = zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            return (difference / a.reduce(0.0) { $0 + Double($1 * $1) }).squareRoot()
        }
        var deviceBytes = [[Int]](repeating: [], count: devices.count)
        var rounding: [Double] = []
        var backends: [Double] = []
        for epoch in 0..<20 {
            for (index, trainer) in trainers.enumerated() {
                guard case .completed(let metrics) = try trainer.runEpoch(epoch) else {
                    Issue.record("epoch \(epoch) did not complete")
                    return
                }
                #expect(metrics.blockLosses.allSatisfy { $0.isFinite })
                try devices[index].defaultStream.synchronize()
                deviceBytes[index].append(devices[index].bytesInUse)
            }
            let states = try trainers.map { try Self.state($0.network) }
            rounding.append(gap(states[0], states[1]))
            if states.count == 3 { backends.append(gap(states[0], states[2])) }
        }
        for (device, bytes) in zip(devices, deviceBytes) {
            #expect(bytes[0] > 0)
            #expect(Set(bytes).count == 1, "\(device.kind) device bytes per epoch: \(bytes)")
        }
        print(
            "soak: relative L2 gap per epoch, CPU vs CPU one ulp apart: "
                + "\(rounding.map { String(format: "%.1e", $0) })"
        )
        print(
            "soak: relative L2 gap per epoch, CPU vs OpenCL:             "
                + "\(backends.map { String(format: "%.1e", $0) })"
        )
        if let worst = backends.max(), let worstRounding = rounding.max() {
            #expect(
                worst <= 4 * worstRounding && worst < 0.1,
                "CPU/OpenCL gap \(backends) against the rounding gap \(rounding)")
        }
    }

    @Test func badCheckpointsAreRefusedWithTheReason() throws {
        let device = try TestBackend.cpu.device()
        let network = try Self.network(device)
        let bytes = try Checkpoint(network: network, options: TrainingOptions(), epochs: 1)
            .serialized()
        #expect {
            _ = try Checkpoint(safetensors: bytes.prefix(bytes.count - 10), path: "cut.safetensors")
        } throws: {
            "\($0)".contains("cut.safetensors") && "\($0)".contains("truncated")
        }
        #expect { _ = try Checkpoint(safetensors: Data([1, 2, 3]), path: "tiny") } throws: {
            "\($0)".contains("shorter than the 8-byte header")
        }
        // A valid safetensors file from another program.
        var foreign = Checkpoint(
            tensors: ["w": GoldenTensor(shape: [2], values: [1, 2])], metadata: [:])
        foreign.metadata["format"] = "pt"
        #expect {
            _ = try Checkpoint(safetensors: try foreign.serialized(), path: "model.safetensors")
        } throws: {
            "\($0)".contains("another program")
        }
        // A checkpoint of another width.
        let wider = try Checkpoint(
            network: try Self.network(device, width: 24), options: TrainingOptions(), epochs: 1)
        #expect { try wider.restore(into: network) } throws: { error in
            "\(error)".contains("block0.weight") && "\(error)".contains("[24, 36]")
                && "\(error)".contains("[16, 36]")
        }
    }

    /// A checkpoint carries the data the run trained on; one written before it did loads with
    /// none, and a run resumed from it works as it did then.
    @Test func checkpointCarriesTheDataSettings() throws {
        let network = try Self.network(try TestBackend.cpu.device())
        let settings = DataSettings(
            directory: "/data/./fashion/", limit: 640, normalization: .fashionMNIST)
        #expect(settings.directory == "/data/fashion")
        let written = try Checkpoint(
            network: network, options: TrainingOptions(), epochs: 2, batchesDone: 3,
            data: settings)
        let loaded = try Checkpoint(safetensors: try written.serialized(), path: "memory")
        #expect(try loaded.data == settings)
        #expect(try loaded.batchesDone == 3)
        var old = loaded
        old.metadata["data"] = nil
        #expect(try old.data == nil)
        old.metadata["data"] = "{\"limit\": 3}"
        #expect { _ = try old.data } throws: { "\($0)".contains("metadata 'data'") }
    }

    @Test func checkpointWritesReplaceAtomically() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-ckpt-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("last.safetensors")
        let network = try Self.network(try TestBackend.cpu.device())
        for epochs in 1...2 {
            try Checkpoint(network: network, options: TrainingOptions(), epochs: epochs).write(
                to: url)
            #expect(try Checkpoint(contentsOf: url).epochs == epochs)
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory.path) == [
                "last.safetensors"
            ])

        // A writer killed mid-write leaves its temporary file; the next write deletes it, but
        // not the file of a writer that is still alive (pid 1 always is).
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let stale = ".last.safetensors.tmp-\(finished.processIdentifier)"
        let live = ".last.safetensors.tmp-1"
        for name in [stale, live] {
            try Data([1, 2, 3]).write(to: directory.appendingPathComponent(name))
        }
        try Checkpoint(network: network, options: TrainingOptions(), epochs: 3).write(to: url)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
                == [live, "last.safetensors"].sorted())
    }
}
