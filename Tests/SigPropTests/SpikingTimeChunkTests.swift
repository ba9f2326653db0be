import Testing

@testable import SigProp

/// Spiking networks run in chunks of time steps: a chunk of the neurons' loop and of an
/// encoding against the whole loop.
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
}
