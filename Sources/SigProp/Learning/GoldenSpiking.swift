import Foundation

/// Spiking networks' reference vectors (`kind: snn`, written by
/// Benchmarks/reference/snn_golden.py with PyTorch's autograd through the neurons' time loop):
/// three SGD steps of a small spiking Signal Propagation network.
extension GoldenCheck {
    /// Every step's block losses and output loss, then every parameter and momentum buffer,
    /// and the output layer's spike counts and predictions (by membrane) on the last step's
    /// samples.
    static func checkSpiking(_ golden: GoldenCase, on device: Device) throws -> GoldenReport {
        guard let config = golden.config, let sgd = golden.sgd else {
            throw SigPropError.badGoldenFile(path: golden.name, reason: "config.sgd is missing")
        }
        let widths = try JSONDecoder().decode(Widths.self, from: config).widths
        var description = NetworkDescription(layers: widths.map { .lif($0) })
        description.spiking = try JSONDecoder().decode(SpikingSettings.self, from: config)
        let x = try golden.input("x")
        let (steps, features) = (x.shape[0], x.shape[2])
        let classes = try golden.input("init.output.synapse.weight").shape[0]
        var settings = OptimizerSettings()
        settings.kind = .sgd
        settings.learningRate = sgd.learningRate
        settings.momentum = sgd.momentum
        settings.weightDecay = sgd.weightDecay
        let network = try Network(
            description, inputShape: [1, 1, features], classes: classes, device: device,
            optimizer: settings, seed: 1)
        guard let blocks = network.spiking else {
            throw SigPropError.configuration("the network has no spiking blocks")
        }
        var named: [(String, Parameter)] = []
        /// A layer's synapse and, where they are learned, its neurons' beta and threshold
        /// (the context part's are the input part's).
        func add(_ prefix: String, _ layer: SpikingLayer, neurons: Bool = true) {
            named += zip(["synapse.weight", "synapse.bias"], layer.parameters).map {
                (prefix + $0, $1)
            }
            guard neurons else { return }
            named += layer.neuron.parameters.map {
                (prefix + ($0.value === layer.neuron.beta ? "beta" : "threshold"), $0)
            }
        }
        add("input.", blocks.signal.input)
        add("context.", blocks.signal.context, neurons: false)
        for (index, block) in blocks.hidden.enumerated() {
            add("hidden.\(index).", block.layer)
        }
        add("output.", blocks.output.layer)
        for (name, parameter) in named {
            try load([parameter], names: [name], prefix: "init.", from: golden, on: device)
        }
        // The parameters were written on the default stream, which `stream` does not wait for.
        try device.defaultStream.synchronize()
        let stream = try device.makeStream()
        let labels = try golden.input("labels")
        var comparisons: [GoldenComparison] = []
        for step in 0..<steps {
            let context = BatchContext(
                images: slice(x, step), labels: slice(labels, step).map { Int32($0) },
                inputShape: [1, 1, features], classes: classes, learningRate: sgd.learningRate,
                loss: LocalLoss())
            var losses: [Float] = []
            try trainStep(network, context, on: stream) { _, _, loss in losses.append(loss) }
            let name = "step\(step).losses"
            comparisons.append(compare(name, losses, try golden.output(name)))
        }
        try stream.synchronize()
        for (name, parameter) in named {
            comparisons += try compareWithMomentum("final." + name, parameter, golden)
        }
        let last = try device.tensor(slice(x, steps - 1), shape: [x.shape[1], 1, 1, features])
        var (spikes, _) = try blocks.signal.infer(last, on: nil)
        for block in blocks.hidden {
            (spikes, _) = try block.infer(spikes, samples: x.shape[1], on: nil)
        }
        let out = try blocks.output.forward(spikes, samples: x.shape[1], on: nil)
        let counts = try device.read(out.rate).map { $0 * Float(description.spiking.timesteps) }
        comparisons.append(
            compare("spike_counts", counts, try golden.output("spike_counts"), tolerance: 1e-3))
        let predictions = try network.predictor()(slice(x, steps - 1), x.shape[1])
        comparisons.append(
            compare(
                "predictions", (predictions["membrane"] ?? []).map(Float.init),
                try golden.output("predictions"), tolerance: 0))
        return GoldenReport(name: golden.name, comparisons: comparisons)
    }

    private struct Widths: Decodable { let widths: [Int] }
}
