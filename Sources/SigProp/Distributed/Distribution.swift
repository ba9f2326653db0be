/// How several processes (MPI ranks) share the training of one network.
public struct Distribution: Sendable {
    public enum Mode: String, Sendable, CaseIterable, Codable {
        /// The network's stages spread over the ranks in contiguous groups balanced by
        /// multiply-adds, as over the devices of one process: only what a stage hands on (the
        /// activations) crosses between ranks, and the weights are those of one process.
        case pipeline
        /// Every rank a replica that trains on its share of every batch; each block's gradients
        /// are averaged over the ranks (weighted by their shares) before its step, so the
        /// weights are those of one process with the whole batch, up to float rounding.
        case data
    }

    public let mode: Mode
    public let group: any ProcessGroup

    public init(_ mode: Mode, group: any ProcessGroup) {
        self.mode = mode
        self.group = group
    }

    public var rank: Int { group.rank }
    public var ranks: Int { group.size }
    public var isRoot: Bool { group.rank == 0 }
}

extension NetworkPlan {
    /// The rank of each of the plan's stages (its blocks, then the output layer) in a
    /// pipeline over `ranks`: contiguous groups balanced by multiply-adds, as `stageDevices`
    /// places them over devices. Refuses more ranks than stages.
    public func stageRanks(_ ranks: Int) throws -> [Int] {
        guard ranks <= stages.count else {
            throw SigPropError.configuration(
                "--distributed pipeline over \(ranks) ranks: the model has \(stages.count) stages "
                    + "(its blocks and the output layer), one rank each at most; run at most "
                    + "\(stages.count) ranks, or --distributed data")
        }
        return Placement.groups(costs: stages.map(\.multiplyAdds), groups: ranks)
    }
}

extension NetworkPlan {
    /// The device of each stage for rank `rank` of a pipeline over `ranks`: the rank's own
    /// stages spread over its `devices` as `stageDevices(on:)` spreads a whole network; the
    /// stages of other ranks, which it only holds, on its first device.
    public func stageDevices(on devices: [Device], rank: Int, ranks: Int) throws -> [Device] {
        let layerRanks = try stageRanks(ranks)
        let own = stages.indices.filter { layerRanks[$0] == rank }
        var placed = [Device](repeating: devices[0], count: stages.count)
        let groups = Placement.groups(
            costs: own.map { stages[$0].multiplyAdds }, groups: devices.count)
        for (index, stage) in own.enumerated() { placed[stage] = devices[groups[index]] }
        return placed
    }
}

/// Which rank runs each stage of a network trained as a pipeline over ranks.
struct RankPlacement {
    /// Per network stage, its rank (the stages of one layer, such as PEPITA's two passes, on
    /// the rank of their layer).
    let stageRanks: [Int]
    let rank: Int

    init(network: Network, rank: Int, ranks: Int) throws {
        let layerRanks = try network.plan.stageRanks(ranks)
        stageRanks = (0..<network.stageCount).map { layerRanks[network.stageLayer($0)] }
        self.rank = rank
    }

    func isLocal(_ stage: Int) -> Bool { stageRanks[stage] == rank }
}

extension Pipeline {
    /// The rows of a batch of `samples` that this rank trains on under data parallelism:
    /// contiguous, in rank order, sizes differing by one at most.
    func shareOfBatch(_ samples: Int, group: any ProcessGroup) -> Range<Int> {
        (samples * group.rank / group.size)..<(samples * (group.rank + 1) / group.size)
    }

    /// Refuses, before any batch, what data parallelism cannot train as one process with the
    /// whole batch would: a rule whose steps do not pass through `UpdateRule.apply`, a loss
    /// that needs every sample's target stream (without the K-row shortcut: per-sample norms
    /// only), or batches with fewer samples than ranks.
    static func checkReplicable(
        _ network: Network, batchSize: Int, ranks: Int, kRowShortcut: Bool
    ) throws {
        guard network.rule.name == .sigprop, !network.plan.isSpiking else {
            throw SigPropError.configuration(
                "--distributed data trains Signal Propagation networks (not spiking ones); "
                    + "--rule \(network.rule.name.rawValue) trains over ranks with "
                    + "--distributed pipeline")
        }
        guard kRowShortcut, network.kRowShortcutIsExact else {
            throw SigPropError.configuration(
                "--distributed data needs the K-row shortcut (the loss compares each sample with "
                    + "the whole batch's targets, which the ranks then share as one row per class): "
                    + "use per-sample norms (layer norm or none, not batch norm) and leave "
                    + "--no-k-row-shortcut out, or train with --distributed pipeline")
        }
        guard batchSize >= ranks else {
            throw SigPropError.configuration(
                "--distributed data over \(ranks) ranks: --batch-size \(batchSize) leaves a "
                    + "rank without samples; use a batch of at least \(ranks)")
        }
    }
}
