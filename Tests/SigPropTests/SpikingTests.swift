import Foundation
import Testing

@testable import SigProp

/// Spiking networks: the neurons' time loop against plain loops, its gradient against finite
/// differences, whole training steps against a PyTorch implementation with autograd (golden
/// vectors from Benchmarks/reference/snn_golden.py), the description, and learning.
@Suite struct SpikingTests {
    static let goldenCases = [
        "snn_voltage_B6_D12_H9x7_K3_T5", "snn_surrogate_B5_D10_H8x6_K4_T6",
        "snn_step_B6_D9_H7x5_K3_T4", "snn_learned_B5_D10_H8x6_K3_T5",
    ]

    /// The dynamics of every (reset, learning) pair, as plain loops over one (sample, unit)
    /// at a time, in double precision: membrane and spikes of every step, representation and
    /// rate.
    static func plainForward(
        _ current: [Float], constant: Bool, plane: Int, _ d: LIFDynamics
    ) -> (membrane: [Float], spikes: [Float], representation: [Float], rate: [Float]) {
        var membrane = [Float](repeating: 0, count: d.steps * plane)
        var spikes = membrane
        var representation = [Float](repeating: 0, count: plane)
        var rate = representation
        let (beta, threshold) = (Double(d.neuron.beta), Double(d.neuron.threshold))
        for i in 0..<plane {
            var (u, s, sum, count) = (0.0, 0.0, 0.0, 0.0)
            for t in 0..<d.steps {
                let input = Double(current[constant ? i : t * plane + i])
                u =
                    d.neuron.reset == .zero
                    ? (1 - s) * (beta * u + input) : beta * u + input - threshold * s
                s = u > threshold ? 1 : 0
                membrane[t * plane + i] = Float(u)
                spikes[t * plane + i] = Float(s)
                if let surrogate = d.surrogate {
                    let x = Double(Float(u) - d.neuron.threshold)
                    let k = Double(d.slope)
                    sum +=
                        surrogate == .arctan
                        ? 0.5 + atan(0.5 * .pi * k * x) / .pi
                        : 0.5 * (1 + k * x / (1 + k * abs(x)))
                } else {
                    sum += u
                }
                count += s
            }
            representation[i] = Float(sum / Double(d.steps))
            rate[i] = Float(count / Double(d.steps))
        }
        return (membrane, spikes, representation, rate)
    }

    static let dynamics: [LIFDynamics] = [
        LIFDynamics(neuron: LIFNeuron(beta: 0.9, threshold: 0.6), steps: 7),
        LIFDynamics(neuron: LIFNeuron(beta: 0.8, threshold: 0.5, reset: .zero), steps: 5),
        LIFDynamics(neuron: LIFNeuron(beta: 0.95), steps: 9, surrogate: .arctan),
        LIFDynamics(
            neuron: LIFNeuron(beta: 0.7, threshold: 0.4, reset: .zero), steps: 3,
            surrogate: .fastSigmoid),
    ]

    @Test(arguments: TestBackend.available, [true, false])
    func dynamicsMatchPlainLoops(_ backend: TestBackend, _ constant: Bool) throws {
        let device = try backend.device()
        let plane = 37 * 3
        for d in Self.dynamics {
            var generator = SeededGenerator(seed: UInt64(d.steps))
            let current = generator.uniform((constant ? 1 : d.steps) * plane, in: -0.5...1.5)
            let neuron = try Self.neuron(d, on: device)
            let membrane = try device.zeros([d.steps * 37, 3])
            let spikes = try device.zeros([d.steps * 37, 3])
            let representation = try device.zeros([37, 3])
            let rate = try device.zeros([37, 3])
            try device.lifForward(
                try device.tensor(current, shape: [current.count / 3, 3]), dynamics: d,
                neuron: neuron, membrane: membrane, spikes: spikes, representation: representation,
                rate: rate)
            let expected = Self.plainForward(current, constant: constant, plane: plane, d)
            let gotSpikes = try device.read(spikes)
            #expect(gotSpikes == expected.spikes, "\(d)")
            #expect(gotSpikes.contains(1) && gotSpikes.contains(0), "\(d): some spikes, not all")
            // count / steps: OpenCL lets a float division be 2.5 ulp off (NVIDIA's is).
            let rateError = zip(try device.read(rate), expected.rate).map { abs($0 - $1) }.max()
            #expect(try #require(rateError) <= 3 * Float.ulpOfOne, "\(d) rate: \(rateError!)")
            for (name, got, want) in [
                ("membrane", try device.read(membrane), expected.membrane),
                ("representation", try device.read(representation), expected.representation),
            ] {
                let error = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
                #expect(error < 1e-5, "\(d) \(name): \(error)")
            }
            // Without the membrane: the same spikes and representation.
            let (alone, aloneRepresentation) = (
                try device.zeros([d.steps * 37, 3]), try device.zeros([37, 3])
            )
            try device.lifForward(
                try device.tensor(current, shape: [current.count / 3, 3]), dynamics: d,
                neuron: neuron, spikes: alone, representation: aloneRepresentation,
                rate: try device.zeros([37, 3]))
            #expect(try device.read(alone) == gotSpikes, "\(d)")
            #expect(try device.read(aloneRepresentation) == device.read(representation), "\(d)")
            if d.gradientReadsMembrane {
                #expect(
                    throws: SigPropError.self, "\(d): a surrogate's gradient needs the membrane"
                ) {
                    try device.lifBackward(
                        spikes: spikes, representationGradient: representation, dynamics: d,
                        neuron: neuron, into: try device.zeros([37, 3]))
                }
            }
        }
    }

    /// `d`'s beta and threshold on `device`; `learned`: as parameters a block learns.
    static func neuron(_ d: LIFDynamics, learned: Bool = false, on device: Device) throws
        -> NeuronParameters
    {
        try NeuronParameters(
            name: "block0", neuron: d.neuron, learnBeta: learned, learnThreshold: learned,
            device: device)
    }

    /// A synapse fed a spike train learns, where the neurons allow it (`stepWeights`), from
    /// one pass over the batch: its weight and bias gradients against those of the reverse
    /// scan over every step, for a dense and a convolutional synapse, beta inside and at the
    /// ends of 0...1; a surrogate, a zeroing reset, a loss at every step and learned neurons
    /// keep the scan.
    @Test(arguments: TestBackend.available)
    func aTrainsTimeMeanGivesTheScansGradient(_ backend: TestBackend) throws {
        let device = try backend.device()
        let (steps, samples) = (6, 3)
        for beta: Float in [0.95, 1, 0] {
            let dynamics = LIFDynamics(
                neuron: LIFNeuron(beta: beta, threshold: 0.5), steps: steps)
            var generator = SeededGenerator(seed: 5)
            let synapses: [(FeatureLayer, [Int])] = [
                (
                    try DenseLayer(
                        device: device, name: "dense", inputs: 11, outputs: 7,
                        activation: .identity, generator: &generator), [11]
                ),
                (
                    try ConvLayer(
                        device: device, name: "conv", inChannels: 2, outChannels: 3, kernelSize: 3,
                        stride: 1, padding: 1, norm: .none, activation: .identity,
                        generator: &generator), [2, 5, 4]
                ),
            ]
            for (synapse, shape) in synapses {
                let what = "\(synapse.parameters[0].name), beta \(beta)"
                let layer = SpikingLayer(
                    synapse: synapse, dynamics: dynamics,
                    neuron: try Self.neuron(dynamics, on: device))
                let weights = try #require(layer.stepWeights, "\(what): no time mean")
                let count = steps * samples * shape.reduce(1, *)
                let train = try device.tensor(
                    generator.uniform(count, in: 0...1).map { $0 < 0.4 ? 1 : 0 },
                    shape: [steps * samples] + shape)
                let pass = try layer.forward(train, samples: samples, on: nil)
                let g = try device.tensor(
                    generator.uniform(pass.representation.count, in: -1...1),
                    shape: pass.representation.shape)
                func gradients() throws -> [[Float]] {
                    try synapse.parameters.map { try device.read($0.gradient) }
                }
                try synapse.accumulateGradients(
                    pass.synapse, outputGradient: try layer.currentGradient(pass, g, on: nil),
                    accumulate: false, on: nil)
                let scan = try gradients()
                let (mean, scaled) = try layer.timeMeanPass(pass, g, weights: weights, on: nil)
                try synapse.accumulateGradients(
                    mean, outputGradient: scaled, accumulate: false, on: nil)
                for (index, (actual, expected)) in zip(try gradients(), scan).enumerated() {
                    expectClose(
                        actual, expected, absolute: 1e-5, relative: 1e-4,
                        "\(what), parameter \(index)")
                }
            }
        }
        let neuron = LIFNeuron(beta: 0.9)
        for (dynamics, learned) in [
            (LIFDynamics(neuron: neuron, steps: steps, surrogate: .arctan), false),
            (LIFDynamics(neuron: LIFNeuron(beta: 0.9, reset: .zero), steps: steps), false),
            (LIFDynamics(neuron: neuron, steps: steps, lossAtEveryStep: true), false),
            (LIFDynamics(neuron: neuron, steps: steps), true),
        ] {
            var generator = SeededGenerator(seed: 6)
            let layer = SpikingLayer(
                synapse: try DenseLayer(
                    device: device, name: "dense", inputs: 4, outputs: 3, activation: .identity,
                    generator: &generator),
                dynamics: dynamics, neuron: try Self.neuron(dynamics, learned: learned, on: device))
            #expect(layer.stepWeights == nil)
        }
    }

    /// The CPU's branch-free arctangent against the double-precision one, over a dense grid
    /// across its three reductions, far out, and at infinity.
    @Test func arctangentMatchesDoublePrecision() {
        let grid = (-400_000...400_000).map { Float($0) * 5e-5 }
        var worst = 0.0
        for a in grid + [1e3, -1e3, 7.5e5, -3e7, .infinity, -.infinity] {
            worst = max(worst, abs(Double(Surrogate.arctangent(a)) - atan(Double(a))))
        }
        #expect(worst < 2.5e-7, "largest error \(worst)")
        #expect(
            Surrogate.arctangent(0) == 0 && Surrogate.arctangent(-0.5) == -Surrogate.arctangent(0.5)
        )
    }

    /// The gradient of sum(g · representation) by the current, beta and the threshold,
    /// against central differences of the plain loop in double precision. With the threshold
    /// out of reach no neuron spikes, so the representation is smooth (the golden cases cover
    /// spikes and resets, where the reset is held constant).
    @Test(arguments: TestBackend.available, [true, false])
    func gradientMatchesFiniteDifferences(_ backend: TestBackend, _ constant: Bool) throws {
        let device = try backend.device()
        let plane = 5 * 7
        for var d in Self.dynamics {
            d.neuron.threshold = 50
            var generator = SeededGenerator(seed: 3)
            let current = generator.uniform((constant ? 1 : d.steps) * plane, in: -1...1)
            let g = generator.uniform(plane, in: -1...1)
            // The surrogate at 50 - u is flat; centre it on this current's membrane instead.
            if d.surrogate != nil { d.slope = 0.05 }
            func objective(_ current: [Float], _ d: LIFDynamics) -> Double {
                let r = Self.plainForward(current, constant: constant, plane: plane, d)
                return zip(r.representation, g).reduce(0) { $0 + Double($1.0) * Double($1.1) }
            }
            let input = try device.tensor(current, shape: [current.count / 7, 7])
            let (membrane, spikes) = (
                try device.zeros([d.steps * 5, 7]), try device.zeros([d.steps * 5, 7])
            )
            let (fixed, learned) = (
                try Self.neuron(d, on: device), try Self.neuron(d, learned: true, on: device)
            )
            try device.lifForward(
                input, dynamics: d, neuron: fixed, membrane: membrane, spikes: spikes,
                representation: try device.zeros([5, 7]), rate: try device.zeros([5, 7]))
            let result = try device.zeros(input.shape)
            // The voltage's gradient reads the spikes alone.
            try device.lifBackward(
                membrane: d.gradientReadsMembrane ? membrane : nil, spikes: spikes,
                representationGradient: try device.tensor(g, shape: [5, 7]), dynamics: d,
                neuron: fixed, into: result)
            let got = try device.read(result)
            // The same scan with the neuron's own gradients: the same current gradient, and
            // beta's and the threshold's shares, summed over the entries.
            let partials = try device.zeros([plane, 2])
            let again = try device.zeros(input.shape)
            try device.lifBackward(
                membrane: membrane, spikes: spikes,
                representationGradient: try device.tensor(g, shape: [5, 7]), dynamics: d,
                neuron: learned, into: again, neuronPartials: partials)
            #expect(try device.read(again) == got, "\(d)")
            let shares = try device.read(partials)
            for (index, name) in ["beta", "threshold"].enumerated() {
                var (up, down) = (d, d)
                if index == 0 {
                    up.neuron.beta += 1e-3
                    down.neuron.beta -= 1e-3
                } else {
                    up.neuron.threshold += 1e-2
                    down.neuron.threshold -= 1e-2
                }
                let h = index == 0 ? 1e-3 : 1e-2
                let numeric = (objective(current, up) - objective(current, down)) / (2 * h)
                let analytic = stride(from: index, to: shares.count, by: 2).reduce(0.0) {
                    $0 + Double(shares[$1])
                }
                #expect(
                    abs(analytic - numeric) < 5e-3 * max(1, abs(numeric)),
                    "\(d) \(name): \(analytic) vs \(numeric)")
            }
            for index in stride(from: 0, to: current.count, by: 3) {
                var (up, down) = (current, current)
                up[index] += 1e-2
                down[index] -= 1e-2
                let numeric = (objective(up, d) - objective(down, d)) / 2e-2
                #expect(
                    abs(Double(got[index]) - numeric) < 2e-3 * max(1, abs(numeric)),
                    "\(d) entry \(index): \(got[index]) vs \(numeric)")
            }
        }
    }

    /// The encodings against a plain loop over (pixel, step): the same trains on every
    /// backend for a seed; a rate train's spike frequency is its pixel's value (pixels
    /// clamped to 0...1), a latency train has one spike per lit pixel, the brightest first.
    @Test(arguments: TestBackend.available)
    func encodingsMatchPlainLoops(_ backend: TestBackend) throws {
        let device = try backend.device()
        let (samples, pixels, steps) = (3, 37, 400)
        var generator = SeededGenerator(seed: 8)
        var values = generator.uniform(samples * pixels - 4, in: -0.2...1.2)
        values += [0, 1, 0.5, 1e-3]
        let plane = values.count
        let images = try device.tensor(values, shape: [samples, pixels])
        func encode(_ encoding: SpikeEncoding, seed: UInt32) throws -> [Float] {
            let trains = try device.zeros([steps * samples, pixels])
            try device.spikeEncode(
                images, encoding: encoding, steps: steps, seed: seed, into: trains)
            return try device.read(trains)
        }
        let rate = try encode(.rate, seed: 11)
        var expected = [Float](repeating: 0, count: steps * plane)
        let stream = CPUKernels.spikeHash(11)
        for t in 0..<steps {
            for i in 0..<plane {
                let u = CPUKernels.spikeHash(CPUKernels.spikeHash(UInt32(t * plane + i)) &+ stream)
                expected[t * plane + i] = Double(u >> 8) / 16_777_216 < Double(values[i]) ? 1 : 0
            }
        }
        #expect(rate == expected)
        #expect(try encode(.rate, seed: 11) == rate, "a seed fixes the train")
        #expect(try encode(.rate, seed: 12) != rate, "another seed draws another train")
        for i in 0..<plane {
            let x = Double(min(max(values[i], 0), 1))
            let frequency = (0..<steps).reduce(0.0) { $0 + Double(rate[$1 * plane + i]) }
            // Four standard deviations of a binomial frequency over the steps.
            let bound = 4 * (x * (1 - x) / Double(steps)).squareRoot() + 1e-9
            #expect(abs(frequency / Double(steps) - x) <= bound, "pixel \(values[i])")
        }
        let latency = try encode(.latency, seed: 11)
        for i in 0..<plane {
            let fired = (0..<steps).filter { latency[$0 * plane + i] == 1 }
            let x = min(max(Double(values[i]), 0), 1)
            let want = x > 0 ? [Int(((1 - x) * Double(steps - 1)).rounded())] : []
            #expect(fired == want, "pixel \(values[i])")
        }
        #expect(throws: SigPropError.self) { _ = try encode(.direct, seed: 0) }
    }

    /// The progress reports carry each block's spikes per step over the epoch so far; the
    /// last one equals the epoch's metrics.
    @Test(arguments: TestBackend.available)
    func progressReportsSpikeRates(_ backend: TestBackend) throws {
        var options = TrainingOptions()
        options.batchSize = 32
        options.validation = nil
        let config = TestNetwork.spiking("lif24,lif16", steps: 5)
        let trainer = try Trainer(
            network: try config.build(try backend.device(), seed: 2), options: options,
            train: try TrainingTests.syntheticData(count: 256, seed: 1),
            test: try TrainingTests.syntheticData(count: 64, seed: 2))
        var last: BatchProgress?
        guard case .completed(let metrics) = try trainer.runEpoch(0, progress: { last = $0 })
        else { throw SigPropError.configuration("the epoch did not complete") }
        let reported = try #require(last)
        #expect(reported.batch == reported.batches)
        #expect(reported.spikeRates.count == 2)
        for (got, want) in zip(reported.spikeRates, metrics.spikeRates) {
            #expect(
                abs(got - want) < 1e-6 && want > 0,
                "\(reported.spikeRates) vs \(metrics.spikeRates)")
        }
    }

    /// Layers that learn their beta and threshold as well learn.
    @Test(arguments: TestBackend.available)
    func itLearnsWithLearnedNeurons(_ backend: TestBackend) throws {
        let config = TestNetwork.spiking("lif24,lif16", learning: .surrogate, steps: 6).with {
            $0.spiking.learnBeta = true
            $0.spiking.learnThreshold = true
        }
        let metrics = try TrainingTests.lastEpoch(
            of: config, optimizer: OptimizerSettings(), epochs: 4, on: try backend.device())
        #expect(metrics.testAccuracy > 0.5, "\(metrics.readoutAccuracies)")
    }

    /// Both encodings that turn the image into spikes learn, and the signal block's synapse
    /// then runs at every step.
    @Test(arguments: TestBackend.available, [SpikeEncoding.rate, .latency])
    func itLearnsFromEncodedImages(_ backend: TestBackend, _ encoding: SpikeEncoding) throws {
        let metrics = try TrainingTests.lastEpoch(
            of: .spiking("lif24", steps: 8, encoding: encoding), optimizer: OptimizerSettings(),
            epochs: 4, on: try backend.device())
        #expect(metrics.testAccuracy > 0.5, "\(encoding): \(metrics.readoutAccuracies)")
    }

    @Test(arguments: TestBackend.available, goldenCases)
    func stepsMatchTheReference(_ backend: TestBackend, _ name: String) throws {
        try expectMatchesReference(name, on: backend)
    }

    /// Both ways of learning beat chance on a learnable problem, and the metrics carry each
    /// block's spike rate and dead fraction.
    @Test(
        arguments: TestBackend.available,
        [
            (SpikingSettings.Learning.voltage, SpikingSettings.LossTiming.mean),
            (.surrogate, .mean), (.surrogate, .step),
        ])
    func itLearns(
        _ backend: TestBackend, _ settings: (SpikingSettings.Learning, SpikingSettings.LossTiming)
    ) throws {
        let metrics = try TrainingTests.lastEpoch(
            of: .spiking("lif24,lif16", learning: settings.0, steps: 6, lossTiming: settings.1),
            optimizer: OptimizerSettings(), epochs: 4, on: try backend.device())
        #expect(metrics.testAccuracy > 0.5, "\(metrics.readoutAccuracies)")
        #expect(metrics.spikeRates.count == 2 && metrics.deadFractions.count == 2)
        #expect(metrics.spikeRates.allSatisfy { $0 > 0 && $0 < 1 }, "\(metrics.spikeRates)")
        #expect(metrics.deadFractions.allSatisfy { (0...1).contains($0) })
        #expect(
            Set(metrics.readoutAccuracies.keys).isSuperset(of: [
                "output", "membrane", "similarity@1", "similarity@2",
            ]))
    }

    @Test func descriptionsOfSpikingNetworks() throws {
        var description = try NetworkDescription(layerList: "lifconv12k5p0,pool,lif100")
        #expect(
            description.layers == [.lifConv(12, kernel: 5, padding: 0), .pool(.max), .lif(100)])
        #expect(description.layerList == "lifconv12k5p0,pool,lif100")
        #expect(description.isSpiking)
        description.spiking.timesteps = 10
        description.spiking.learning = .surrogate
        let decoded = try JSONDecoder().decode(
            NetworkDescription.self, from: try JSONEncoder().encode(description))
        #expect(decoded == description)
        let plan = try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10)
        #expect(plan.isSpiking && plan.stages.allSatisfy(\.spiking))
        #expect(
            plan.stages[1].after.isEmpty
                && plan.stages[0].after == [.pool(.max, size: 2), .flatten])
        // The second block reads a spike train: its multiply-adds count every step.
        #expect(plan.stages[1].multiplyAdds == Double(12 * 12 * 12 * 100 * 10))
        // An image encoded as spikes is a spike train too.
        let direct = plan.stages[0].multiplyAdds
        description.spiking.encoding = .rate
        let encoded = try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10)
        let context = Double(10 * 12 * 24 * 24)
        #expect(encoded.stages[0].multiplyAdds - context == 10 * (direct - context))
        #expect(
            try JSONDecoder().decode(
                NetworkDescription.self, from: try JSONEncoder().encode(description)
            ).spiking.encoding == .rate)
        // A description without spiking layers writes no spiking settings.
        let plain = String(
            decoding: try JSONEncoder().encode(NetworkDescription.cnn), as: UTF8.self)
        #expect(!plain.contains("spiking"))
        for (layers, message) in [
            ("lif16,dense8", "layer 2, 'dense8', is not spiking, while the first layer is"),
            ("conv8,lifconv8", "layer 2, 'lifconv8', is spiking, while the first layer is not"),
        ] {
            #expect(throws: SigPropError.self, "\(layers)") {
                try NetworkPlan(
                    try NetworkDescription(layerList: layers), inputShape: [1, 8, 8], classes: 3)
            }
            do {
                _ = try NetworkPlan(
                    try NetworkDescription(layerList: layers), inputShape: [1, 8, 8], classes: 3)
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
        var bad = NetworkDescription(layers: [.lif(8)])
        bad.spiking.timesteps = 0
        #expect(throws: SigPropError.self) {
            try NetworkPlan(bad, inputShape: [1, 8, 8], classes: 3)
        }
        #expect(throws: SigPropError.self) {
            try Network(
                NetworkDescription(layers: [.lif(8)]), inputShape: [1, 8, 8], classes: 3,
                device: try TestBackend.cpu.device(), optimizer: OptimizerSettings(), seed: 1,
                rule: LearningRule(.ff))
        }
    }
}
