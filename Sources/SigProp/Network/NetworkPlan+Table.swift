import Foundation

extension NetworkPlan.Stage {
    /// The layer as the grammar writes it, with its real width (after the width multiplier).
    public var layerName: String {
        switch kind {
        case .dense(_, let outputs):
            (spiking ? .lif(outputs) : NetworkDescription.Layer.dense(outputs)).description
        case .conv(_, let channels, let kernel, let stride, let padding):
            (spiking
                ? .lifConv(channels, kernel: kernel, stride: stride, padding: padding)
                : NetworkDescription.Layer.conv(
                    channels, kernel: kernel, stride: stride, padding: padding)).description
        case .output(_, let classes): (spiking ? "lif" : "dense") + "\(classes)"
        }
    }

    /// The fixed steps after the layer, as the grammar writes them.
    public var fixedStepNames: [String] {
        after.map { step in
            switch step {
            case .pool(let kind, let size, let ceil):
                NetworkDescription.Layer.pool(kind, size: size).description
                    + (ceil ? " (ceil)" : "")
            case .dropout(let p): NetworkDescription.Layer.dropout(p).description
            case .flatten: "flatten"
            }
        }
    }
}

/// What training a network takes on one memory pool (a device, or devices sharing memory).
public struct MemoryNeed: Sendable {
    /// The devices drawing on the pool.
    public let devices: String
    /// Parameters with their gradients and optimizer state.
    public let parameterBytes: Double
    /// The activations of every batch in flight (a floor: convolution scratch is left out).
    public let activationBytes: Double
    public let freeBytes: UInt64
}

extension NetworkPlan {
    /// The stage names of messages and traces: `block1` (the signal block) ... `output`.
    public func stageName(_ stage: Int) -> String {
        stage < blockCount ? "block\(stage + 1)" : "output"
    }

    /// Forward-Forward's parameters of stage `index`: a layer's weights and biases (no norm,
    /// no label projection), or the linear classifier's weights over the readout layers.
    func forwardForwardParameters(_ index: Int) -> Int {
        let widths = stages.prefix(blockCount).map { $0.outputShape.reduce(1, *) }
        guard index < blockCount else {
            return classes * (widths.count == 1 ? widths[0] : widths.dropFirst().reduce(0, +))
        }
        return stages[index].inputShape.reduce(1, *) * widths[index] + widths[index]
    }

    /// One line per stage: its layer and fixed steps, shapes, parameters, multiply-adds per
    /// sample and (given `stageDevices`) its device, then the totals; under Forward-Forward
    /// its layers and classifier, under PEPITA its layers (each run twice per batch).
    public func table(stageDevices: [Device]? = nil, rule: LearningRule.Name = .sigprop)
        -> [String]
    {
        func shape(_ dims: [Int]) -> String { dims.map(String.init).joined(separator: "x") }
        var rows: [[String]] = [
            ["stage", "layer", "input", "output", "handed on", "parameters", "MACs/sample"]
                + (stageDevices == nil ? [] : ["device"])
        ]
        let ff = rule == .ff
        // PEPITA's layers have no bias and no norm, and no label projection.
        let parameters = stages.indices.map { index in
            switch rule {
            case .ff: forwardForwardParameters(index)
            case .pepita:
                stages[index].inputShape.reduce(1, *) * stages[index].outputShape.reduce(1, *)
            case .sigprop, .efp: stages[index].parameterCount
            }
        }
        for (index, stage) in stages.enumerated() {
            let layer = ([stage.layerName] + stage.fixedStepNames).joined(separator: " ")
            let name =
                switch rule {
                case .ff: index < blockCount ? "layer\(index + 1)" : "classifier"
                case .pepita: stageName(index)
                case .sigprop, .efp: stageName(index) + (index == 0 ? " (signal)" : "")
                }
            // Forward-Forward's classifier reads the readout layers side by side.
            let classifier = ff && index == blockCount
            rows.append(
                [
                    name, layer,
                    classifier ? String(parameters[index] / classes) : shape(stage.inputShape),
                    shape(stage.outputShape), shape(stage.handedOnShape),
                    ProgressText.grouped(parameters[index]),
                    ProgressText.grouped(
                        classifier || rule == .pepita
                            ? parameters[index] : Int(stage.multiplyAdds)),
                ] + (stageDevices.map { [$0[index].description] } ?? []))
        }
        rows.append(
            [
                "total", "", "", "", "",
                ProgressText.grouped(parameters.reduce(0, +)),
                ProgressText.grouped(
                    rule == .pepita
                        ? parameters.reduce(0, +)
                        : Int(stages.reduce(0) { $0 + $1.multiplyAdds })
                            + (ff
                                ? parameters[blockCount] - Int(stages[blockCount].multiplyAdds) : 0)
                ),
            ] + (stageDevices == nil ? [] : [""]))
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                // Numbers align right, words left.
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column >= 5 && column <= 6 ? pad + cell : cell + pad
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }

    /// Bytes of activations that one training batch of `batchSize` (the target stream of
    /// `targetRows` rows) allocates over all stages on one device.
    public func activationBytes(batchSize: Int, targetRows: Int) -> Double {
        let estimate = MemoryEstimate(self)
        let batches = MemoryEstimate.Batches(size: batchSize, targetRows: targetRows, inFlight: 1)
        return stages.indices.reduce(0) {
            $0 + estimate.activationBytes($1, batches: batches, crossing: false)
        }
    }

    /// What training takes on each memory pool of `stageDevices` (one device per stage) with
    /// `optimizer`, batches of `batchSize` (the target stream of `targetRows` rows) and
    /// `inFlight` of them at once.
    public func memory(
        on stageDevices: [Device], optimizer: OptimizerSettings, batchSize: Int, targetRows: Int,
        inFlight: Int
    ) -> [MemoryNeed] {
        MemoryEstimate(self).needs(
            on: stageDevices, optimizer: optimizer,
            batches: MemoryEstimate.Batches(
                size: batchSize, targetRows: targetRows, inFlight: inFlight))
    }
}
