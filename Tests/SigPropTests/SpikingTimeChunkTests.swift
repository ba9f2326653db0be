import Testing

@testable import SigProp

/// Spiking networks run in chunks of time steps (`--time-chunk`): a chunk of the neurons'
/// loop and of an encoding against the whole loop, training in chunks against training on
/// the whole trains, memory that does not grow with the steps, and the settings it refuses.
@Suite struct SpikingTimeChunkTests {
    /// Every dynamics, on a current held at every step and on a train: the chunks' spikes and
    /// membranes are the whole loop's planes, and their sums its representation and rate.
    @Test(arguments: TestBackend.available, [true, false])
    func chunksRunTheWholeLoop(_ backend: TestBackend, _ constant: Bool) throws {
        let device = try backend.device()
        let (samples, units) = (29, 3)
        let plane = samples * units
        for d in SpikingTests.dynamics {
            var generator = SeededGenerator(seed: UInt64(d.steps) + 40)
            let current = generator.uniform((constant ? 1 : d.steps) * plane, in: -0.5...1.5)
            let neuron = try SpikingTests.neuron(d, on: device)
            func planes(_ steps: Int) throws -> Tensor {
                try device.zeros([steps * samples, units])
            }
            let (membrane, spikes) = (try planes(d.steps), try planes(d.steps))
            let (representation, rate) = (try planes(1), try planes(1))
            try device.lifForward(
                try device.tensor(current, shape: [current.count / units, units]), dynamics: d,
                neuron: neuron, membrane: membrane, spikes: spikes, representation: representation,
                rate: rate)
            // Uneven chunks: one step, then two, then the rest.
            let bounds = [0, 1, min(3, d.steps), d.steps].reduce(into: [Int]()) {
                if $0.last != $1 { $0.append($1) }
            }
            let (state, chunkRepresentation, chunkRate) = (
                try planes(1), try planes(1), try planes(1)
            )
            var (chunkMembrane, chunkSpikes) = ([Float](), [Float]())
            for (first, end) in zip(bounds, bounds.dropFirst()) {
                let chunk = first..<end
                let input = constant ? current : Array(current[(first * plane)..<(end * plane)])
                let (m, s) = (try planes(chunk.count), try planes(chunk.count))
                try device.lifForward(
                    try device.tensor(input, shape: [input.count / units, units]), dynamics: d,
                    neuron: neuron, membrane: m, spikes: s, representation: chunkRepresentation,
                    rate: chunkRate, chunk: chunk, state: state)
                chunkMembrane += try device.read(m)
                chunkSpikes += try device.read(s)
            }
            #expect(chunkSpikes == (try device.read(spikes)), "\(d)")
            #expect(chunkMembrane == (try device.read(membrane)), "\(d)")
            for (name, got, want) in [
                (
                    "representation", try device.read(chunkRepresentation),
                    try device.read(representation)
                ),
                ("rate", try device.read(chunkRate), try device.read(rate)),
            ] {
                let error = zip(got, want).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
                #expect(error < 1e-6, "\(d) \(name): \(error)")
            }
        }
        let d = SpikingTests.dynamics[0]
        #expect(throws: SigPropError.self, "a later chunk needs the state of the one before") {
            try device.lifForward(
                try device.zeros([samples, units]), dynamics: d,
                neuron: try SpikingTests.neuron(d, on: device),
                spikes: try device.zeros([2 * samples, units]),
                representation: try device.zeros([samples, units]),
                rate: try device.zeros([samples, units]), chunk: 2..<4)
        }
    }

    /// A chunk of a rate or latency train is the whole train's planes of those steps.
    @Test(arguments: TestBackend.available, [SpikeEncoding.rate, .latency])
    func encodingChunksAreTheTrainsPlanes(_ backend: TestBackend, _ encoding: SpikeEncoding)
        throws
    {
        let device = try backend.device()
        let (samples, pixels, steps) = (3, 41, 30)
        var generator = SeededGenerator(seed: 9)
        let images = try device.tensor(
            generator.uniform(samples * pixels, in: 0...1), shape: [samples, pixels])
        let whole = try device.zeros([steps * samples, pixels])
        try device.spikeEncode(images, encoding: encoding, steps: steps, seed: 5, into: whole)
        let train = try device.read(whole)
        #expect(train.contains(1))
        let plane = samples * pixels
        for chunk in [0..<7, 7..<8, 8..<30] {
            let part = try device.zeros([chunk.count * samples, pixels])
            try device.spikeEncode(
                images, encoding: encoding, steps: steps, seed: 5, chunk: chunk, into: part)
            #expect(
                try device.read(part)
                    == Array(train[(chunk.lowerBound * plane)..<(chunk.upperBound * plane)]),
                "\(chunk)")
        }
    }

    /// Voltage and surrogate learning (the chunks run again for its gradients), dense on rate
    /// trains and conv with a pool, chunks that do and do not divide the steps.
    static let networks: [TestNetwork] = [
        .spiking("lif16,lif8", steps: 7, encoding: .rate).with { $0.spiking.timeChunk = 3 },
        .spiking("lifconv4,pool,lif8", steps: 5).with { $0.spiking.timeChunk = 2 },
        .spiking("lif16,lif8", learning: .surrogate, steps: 7, encoding: .rate).with {
            $0.spiking.timeChunk = 3
        },
        .spiking("lifconv4,pool,lif8", learning: .surrogate, steps: 6).with {
            $0.spiking.timeChunk = 2
            $0.spiking.surrogate = .fastSigmoid
        },
    ]

    /// An epoch in chunks of steps gives the weights and optimizer state of one on the whole
    /// trains, up to the order of the sums over steps.
    @Test(arguments: TestBackend.available, networks)
    func trainingInChunksGivesTheWholeTrainsUpdates(_ backend: TestBackend, _ config: TestNetwork)
        throws
    {
        let device = try backend.device()
        let whole = config.with { $0.spiking.timeChunk = nil }
        func trained(_ config: TestNetwork) throws -> Network {
            try ArchitectureTests.trained(
                config, devices: [device], schedule: Schedule(.sequential))
        }
        let initial = try TrainingTests.state(
            try whole.build(device, optimizer: ArchitectureTests.options.optimizer, seed: 11))
        let (reference, network) = (try trained(whole), try trained(config))
        let (expected, chunked) = (
            try TrainingTests.state(reference), try TrainingTests.state(network)
        )
        #expect(expected != initial, "training changed the weights")
        #expect(chunked.count == expected.count)
        let scale = expected.map(abs).max() ?? 1
        let error = zip(chunked, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(error <= 1e-5 * scale, "largest difference \(error) of values up to \(scale)")
        // The readouts, in chunks too, see the same network.
        let data = try TrainingTests.syntheticData(count: 40, seed: 3, shape: config.inputShape)
        #expect(try network.predictor()(data.images, 40) == reference.predictor()(data.images, 40))
    }

    /// The device memory a trained epoch leaves in the pools: in chunks it is the same for 24
    /// steps as for 6, where the whole trains grow with the steps, and within a quarter of
    /// the estimate that decides whether a model fits. A device of its own, which holds
    /// nothing else.
    @Test(arguments: TestBackend.available)
    func memoryInChunksDoesNotGrowWithTheSteps(_ backend: TestBackend) throws {
        let device = try backend.privateDevice()
        func deviceBytes(
            steps: Int, chunk: Int?, learning: SpikingSettings.Learning = .voltage
        ) throws -> Int {
            let config = TestNetwork.spiking("lif32,lif16", learning: learning, steps: steps).with {
                $0.spiking.timeChunk = chunk
            }
            let trainer = try Trainer(
                network: try config.build(device, seed: 2), options: ArchitectureTests.options,
                train: try TrainingTests.syntheticData(count: 64, seed: 1),
                test: try TrainingTests.syntheticData(count: 32, seed: 2),
                schedule: Schedule(.sequential))
            guard case .completed(let metrics) = try trainer.runEpoch(0) else {
                throw SigPropError.configuration("the epoch did not complete")
            }
            let estimate = MemoryEstimate(try config.plan())
            let options = ArchitectureTests.options
            let batches = MemoryEstimate.Batches(
                size: options.batchSize, targetRows: config.classes, inFlight: 1)
            let expected = estimate.stages.indices.reduce(0.0) {
                $0 + estimate.parameterBytes(estimate.stages[$1], optimizer: options.optimizer)
                    + estimate.activationBytes($1, batches: batches, crossing: false)
            }
            let held = Double(metrics.deviceBytes)
            let what = "\(steps) steps in chunks of \(chunk ?? steps)"
            #expect(
                held > expected / 1.25 && held < expected * 1.25,
                "\(what): held \(held) bytes, estimated \(expected)")
            return metrics.deviceBytes
        }
        let (short, long) = (
            try deviceBytes(steps: 6, chunk: 3), try deviceBytes(steps: 24, chunk: 3)
        )
        #expect(long == short, "\(short) bytes for 6 steps, \(long) for 24")
        let (surrogateShort, surrogateLong) = (
            try deviceBytes(steps: 6, chunk: 3, learning: .surrogate),
            try deviceBytes(steps: 24, chunk: 3, learning: .surrogate)
        )
        #expect(
            surrogateLong == surrogateShort,
            "surrogate: \(surrogateShort) bytes for 6 steps, \(surrogateLong) for 24")
        let (wholeShort, wholeLong) = (
            try deviceBytes(steps: 6, chunk: nil), try deviceBytes(steps: 24, chunk: nil)
        )
        #expect(wholeLong > wholeShort, "the whole trains: \(wholeShort) and \(wholeLong) bytes")
    }

    /// What chunks cannot run is refused before any work, naming the setting.
    @Test func refusesWhatNeedsTheWholeTrain() throws {
        let device = try TestBackend.cpu.device()
        for (change, named) in [
            (
                { (d: inout NetworkDescription) in d.spiking.neuron.reset = .zero },
                "--reset zero"
            ),
            ({ $0.spiking.learnThreshold = true }, "--learn-threshold"),
            ({ $0.spiking.lossTiming = .step }, "--spike-loss step"),
            ({ $0.spiking.learnBeta = true }, "--learn-beta"),
            ({ $0.spiking.timeChunk = 0 }, "at least 1 time step"),
            ({ $0.layers.insert(.dropout(0.2), at: 1) }, "'dropout0.2'"),
        ] {
            var description = try NetworkDescription(layerList: "lif8,lif4")
            description.spiking.timeChunk = 2
            change(&description)
            #expect(throws: SigPropError.self, "\(named)") {
                try NetworkPlan(description, inputShape: [1, 6, 6], classes: 4)
            }
            do {
                _ = try NetworkPlan(description, inputShape: [1, 6, 6], classes: 4)
            } catch {
                #expect("\(error)".contains(named), "\(error)")
            }
        }
        let config = TestNetwork.spiking("lif8,lif4", steps: 4).with { $0.spiking.timeChunk = 2 }
        #expect(throws: SigPropError.self, "batches cannot overlap") {
            try Trainer(
                network: try config.build(device, seed: 1), options: ArchitectureTests.options,
                train: try TrainingTests.syntheticData(count: 64, seed: 1),
                test: try TrainingTests.syntheticData(count: 32, seed: 2),
                schedule: Schedule(.pipelined))
        }
        let automatic = Schedule.automatic(
            for: try NetworkPlan(config.description, inputShape: [1, 6, 6], classes: 4),
            capabilities: [device.capabilities], batchSize: 32, targetRows: 4)
        #expect(automatic.schedule.kind == .sequential, "\(automatic.reason)")
        #expect(throws: SigPropError.self, "one device") {
            try config.build(try MultiDeviceTests.splitCPU(2), seed: 1)
        }
    }
}
