import ArgumentParser
import SigProp

extension Train {
    /// Refuses, before any batch, a network that `distribution` cannot train.
    func checkDistributable(_ network: Network, distribution: Distribution) throws {
        if network.description.isSpiking {
            throw UsageError(
                "--distributed: spiking networks train in one process (their spike counters "
                    + "are not shared between ranks); leave --distributed out")
        }
        if distribution.mode == .pipeline {
            _ = try network.plan.stageRanks(distribution.ranks)
        }
    }

    /// The line that says how the ranks share the network.
    static func rankPlacement(_ network: Network, distribution: Distribution) -> String {
        let ranks = distribution.ranks
        switch distribution.mode {
        case .pipeline:
            let layerRanks = (try? network.plan.stageRanks(ranks)) ?? []
            let groups = (0..<ranks).map { rank in
                "rank \(rank): "
                    + (0..<network.stageCount).filter {
                        layerRanks[network.stageLayer($0)] == rank
                    }.map(network.stageName).joined(separator: ", ")
            }
            return "distributed: pipeline over \(ranks) ranks (balanced by multiply-adds); "
                + groups.joined(separator: "; ")
        case .data:
            return "distributed: data parallel over \(ranks) ranks, each on its share of every "
                + "batch; gradients averaged"
        }
    }
}

extension Distribution.Mode: ExpressibleByArgument {}
