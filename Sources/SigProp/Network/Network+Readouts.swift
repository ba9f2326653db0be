/// How a trained network predicts: the readouts of its rule (`ReadoutChoice`), each sample's
/// predicted class by each.
extension Network {
    /// The readouts this network's rule offers, in the order ties are settled in.
    public var readoutChoices: [ReadoutChoice] {
        if spiking != nil {
            return [.output, .membrane] + (1...blockCount).map { .similarity(block: $0) }
        }
        return switch rule.name {
        case .sigprop, .efp: ReadoutChoice.all(blockCount: blockCount)
        case .ff: [.output, .goodness]
        case .pepita: [.output]
        }
    }

    /// A function from samples (flattened, `count` of them) to each readout's predictions,
    /// keyed by `ReadoutChoice.description`. What every batch shares (the class targets) is
    /// computed once, here.
    public func predictor() throws -> (_ images: [Float], _ count: Int) throws -> [String: [Int]] {
        if let spiking {
            let targets = try spikingClassTargets(spiking)
            // A rate encoding draws each batch's trains from the batch's number: one
            // predictor's predictions are reproducible.
            var batches: UInt32 = 0
            return { images, count in
                batches &+= 1
                return try self.spikingPredictions(spiking, images, count, targets, batches)
            }
        }
        switch rule.name {
        case .sigprop, .efp:
            let targets = try classTargets()
            return { images, count in try self.signalPropagationPredictions(images, count, targets)
            }
        case .ff:
            return { images, count in try self.forwardForwardPredictions(images, count) }
        case .pepita:
            return { images, count in try self.pepitaPredictions(images, count) }
        }
    }

    // MARK: Signal Propagation

    /// The input stream through every block (the target stream is not used at inference);
    /// each block's output on its own device.
    public func features(images: [Float], count: Int) throws -> [Tensor] {
        try throughHiddenBlocks(try signalBlock().infer(try input(images, count), on: nil))
    }

    /// Each class's target activations at every block: the context of onehot(k) through the
    /// blocks. Under Error Forward-Propagation the context is an error, so class k's is the
    /// error of a prediction that knows nothing: `1/K − onehot(k)` (the uniform prediction's).
    public func classTargets() throws -> [Tensor] {
        let labels = (0..<classes).map(Int32.init)
        var context = try onehot(labels)
        if rule.name == .efp {
            let uniform = try device.tensor(
                [Float](repeating: 1 / Float(classes), count: classes * classes),
                shape: [classes, classes])
            try device.axpby(alpha: -1, context, beta: 1, uniform)
            context = uniform
        }
        return try throughHiddenBlocks(try signalBlock().inferTarget(context, on: nil))
    }

    /// The output layer's logits for the last block's output `h`.
    public func logits(_ h: Tensor) throws -> Tensor {
        guard let output else { throw Self.notSignalPropagation("the output layer's logits") }
        return try output.logits(try stageDevices[plan.blockCount].transfer(h), on: nil)
    }

    private func signalBlock() throws -> SignalBlock {
        guard let signal else { throw Self.notSignalPropagation("the signal block") }
        return signal
    }

    private func input(_ images: [Float], _ count: Int) throws -> Tensor {
        try device.tensor(images, shape: [count] + inputShape)
    }

    /// Calls `body(block index, output)` with `first` (the signal block's output), then with
    /// what each hidden block makes of its predecessor's, holding only a block's input and
    /// output: a caller that keeps none needs the memory of one block, not of all.
    func throughHiddenBlocks(_ first: Tensor, _ body: (Int, Tensor) throws -> Void) throws {
        var h = first
        try body(0, h)
        for (index, block) in hidden.enumerated() {
            h = try block.infer(try stageDevices[index + 1].transfer(h), on: nil)
            try body(index + 1, h)
        }
    }

    /// `first` and every block's output after it, all kept.
    func throughHiddenBlocks(_ first: Tensor) throws -> [Tensor] {
        var outputs = [Tensor]()
        try throughHiddenBlocks(first) { outputs.append($1) }
        return outputs
    }

    private static func notSignalPropagation(_ what: String) -> SigPropError {
        .configuration("\(what) exists under Signal Propagation only (--rule sigprop)")
    }

    /// The output layer's argmax, and at each block the class whose target is most similar
    /// (dot product) to the sample's activations.
    private func signalPropagationPredictions(
        _ images: [Float], _ count: Int, _ targets: [Tensor]
    ) throws -> [String: [Int]] {
        var predictions = [String: [Int]]()
        var last: Tensor?
        try throughHiddenBlocks(try signalBlock().infer(try input(images, count), on: nil)) {
            block, h in
            predictions[ReadoutChoice.similarity(block: block + 1).description] =
                try similarityArgmax(h, targets[block])
            last = h
        }
        let logits = try self.logits(last!)
        predictions[ReadoutChoice.output.description] = Trainer.argmax(
            try logits.device.read(logits), columns: classes)
        return predictions
    }

    // MARK: Spiking networks

    /// Each class's target representation at every block: the context of onehot(k) through
    /// the blocks' spiking neurons.
    func spikingClassTargets(_ blocks: SpikingBlocks) throws -> [Tensor] {
        let context = try onehot((0..<classes).map(Int32.init))
        if blocks.timeChunks != nil {
            return try blocks.runInChunks(images: nil, context: context, learns: false, on: nil)
                .target.map(\.representation!)
        }
        var (spikes, representation) = try blocks.signal.inferTarget(context, on: nil)
        var targets = [representation]
        for (index, block) in blocks.hidden.enumerated() {
            (spikes, representation) = try block.infer(
                try stageDevices[index + 1].transfer(spikes), samples: classes, on: nil)
            targets.append(representation)
        }
        return targets
    }

    /// The output layer's spike count (`output`) and mean membrane (`membrane`), and at each
    /// block the class whose target representation is most similar to the sample's.
    private func spikingPredictions(
        _ blocks: SpikingBlocks, _ images: [Float], _ count: Int, _ targets: [Tensor],
        _ encodingSeed: UInt32
    ) throws -> [String: [Int]] {
        let x = try device.tensor(images, shape: [count] + inputShape)
        let (representations, out) = try spikingInputStream(blocks, x, encodingSeed)
        var predictions = [
            ReadoutChoice.output.description: Trainer.argmax(
                try out.rate.device.read(out.rate), columns: classes),
            ReadoutChoice.membrane.description: Trainer.argmax(
                try out.representation.device.read(out.representation), columns: classes),
        ]
        for (block, (h, t)) in zip(representations, targets).enumerated() {
            predictions[ReadoutChoice.similarity(block: block + 1).description] =
                try similarityArgmax(h, t)
        }
        return predictions
    }

    /// The input stream of `x` through the blocks: each block's representation, and the
    /// output layer's spikes per step and mean membrane.
    private func spikingInputStream(_ blocks: SpikingBlocks, _ x: Tensor, _ encodingSeed: UInt32)
        throws -> (representations: [Tensor], output: (rate: Tensor, representation: Tensor))
    {
        if blocks.timeChunks != nil {
            let run = try blocks.runInChunks(
                images: x, encodingSeed: encodingSeed, context: nil, learns: false, on: nil)
            let out = run.input.last!
            return (run.input.dropLast().map(\.representation!), (out.rate!, out.representation!))
        }
        var (spikes, representation) = try blocks.signal.infer(
            x, encodingSeed: encodingSeed, on: nil)
        var representations = [representation]
        for (index, block) in blocks.hidden.enumerated() {
            (spikes, representation) = try block.infer(
                try stageDevices[index + 1].transfer(spikes), samples: x.rows, on: nil)
            representations.append(representation)
        }
        let out = try blocks.output.forward(
            try stageDevices[plan.blockCount].transfer(spikes), samples: x.rows, on: nil)
        return (representations, (out.rate, out.representation))
    }

    /// Per row of `h`, the row of `t` (one per class) of the largest dot product.
    private func similarityArgmax(_ h: Tensor, _ t: Tensor) throws -> [Int] {
        let device = h.device
        let scores = try device.zeros([h.rows, classes])
        try device.gemm(
            try h.reshaped([h.rows, h.columns]), try t.reshaped([t.rows, t.columns]),
            transposeB: true, into: scores)
        return Trainer.argmax(try device.read(scores), columns: classes)
    }

    // MARK: Forward-Forward

    /// The linear classifier on the neutral rows (`output`), and the label whose embedding
    /// gives the readout layers the highest total goodness (`goodness`).
    private func forwardForwardPredictions(_ images: [Float], _ count: Int) throws
        -> [String: [Int]]
    {
        let (goodness, logits) = try forwardForwardScores(images, count)
        let byLabel = (0..<count).map { bestLabel(goodness, count: count, row: $0) }
        return [
            ReadoutChoice.output.description: Trainer.argmax(logits, columns: classes),
            ReadoutChoice.goodness.description: byLabel,
        ]
    }

    /// Per sample, the wrong label of highest total goodness over the readout layers:
    /// Forward-Forward's hard negatives (`ForwardForwardSettings.NegativeLabels.hard`).
    public func hardestWrongLabels(_ images: [Float], labels: [Int32]) throws -> [Int32] {
        let count = labels.count
        let goodness = try forwardForwardScores(images, count, logits: false).goodness
        return (0..<count).map { row in
            Int32(bestLabel(goodness, count: count, row: row, excluding: Int(labels[row])))
        }
    }

    /// The label of highest goodness for sample `row` of `goodness` (laid out as
    /// `forwardForwardScores` gives it), other than `excluded`; the first of equals.
    private func bestLabel(
        _ goodness: [Float], count: Int, row: Int, excluding excluded: Int? = nil
    )
        -> Int
    {
        var best = excluded == 0 ? 1 : 0
        for k in (best + 1)..<classes
        where k != excluded && goodness[k * count + row] > goodness[best * count + row] {
            best = k
        }
        return best
    }

    /// Each label's total goodness over the readout layers, [K x count] (label k's row of
    /// sample b at k x count + b), and with `logits` the linear classifier's on the neutral
    /// rows, [count x K] (empty without). All K labels of every sample go through the layers
    /// as one batch of K x count rows (the first layer computes label 0's and derives the
    /// others and the neutral rows from them).
    func forwardForwardScores(_ images: [Float], _ count: Int, logits wanted: Bool = true) throws
        -> (goodness: [Float], logits: [Float])
    {
        guard let classifier else { throw SigPropError.configuration("no Forward-Forward layers") }
        let first = stageDevices[0]
        let neutral = try ForwardForwardBlock.normalizedRows(
            ForwardForwardBlock.labelled(
                images, count: count, classes: classes,
                labels: [Int?](repeating: nil, count: count)),
            rows: count, device: first, on: nil)
        let labelZero = try ForwardForwardBlock.normalizedRows(
            ForwardForwardBlock.labelled(
                images, count: count, classes: classes,
                labels: [Int?](repeating: 0, count: count)),
            rows: count, device: first, on: nil)
        let (a, neutralA) = try forwardForward[0].labelledPreactivations(
            labelZero, labels: [Int](repeating: 0, count: count),
            relabelled: (1..<classes).map { [Int](repeating: $0, count: count) },
            neutral: neutral, classes: classes, on: nil)
        var z = wanted ? try ForwardForwardBlock.rows(neutralA, on: nil).normalized : nil
        var (y, goodness) = try ForwardForwardBlock.rows(a, on: nil)
        var readouts: [Tensor] = []
        var scores = [Float](repeating: 0, count: classes * count)
        for (index, layer) in forwardForward.enumerated() {
            let layerDevice = stageDevices[index]
            if index > 0 {
                z = try z.map { try layer.infer(try layerDevice.transfer($0), on: nil).normalized }
                (y, goodness) = try layer.infer(try layerDevice.transfer(y), on: nil)
            }
            guard layer.isReadout else { continue }
            if let z { readouts.append(z) }
            for (i, value) in try layerDevice.read(goodness).enumerated() { scores[i] += value }
        }
        guard wanted else { return (scores, []) }
        let classifierDevice = stageDevices[stageCount - 1]
        let (logits, _) = try classifier.logits(
            try readouts.map { try classifierDevice.transfer($0) }, on: nil)
        return (scores, try classifierDevice.read(logits))
    }

    // MARK: PEPITA

    /// The clean pass's argmax.
    private func pepitaPredictions(_ images: [Float], _ count: Int) throws -> [String: [Int]] {
        var z = try device.tensor(images, shape: [count, images.count / max(count, 1)])
        for (index, layer) in pepita.enumerated() {
            z = try layer.forward(try stageDevices[index].transfer(z), on: nil).1
        }
        return [
            ReadoutChoice.output.description: Trainer.argmax(
                try z.device.read(z), columns: classes)
        ]
    }
}
