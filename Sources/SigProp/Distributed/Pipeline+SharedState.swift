extension Pipeline {
    /// After a run of batches over several ranks: every rank's copy of the network takes the
    /// parameters, optimizer state and step counts, and the buffers, of the rank that trains
    /// them (in a pipeline, the rank of their stage; replicas, rank 0's, which the others
    /// already equal unless their sums rounded differently), so that every rank evaluates and
    /// checkpoints the same network. Collective: every rank calls it at the same point.
    /// Nothing to do in one process.
    public func shareState() throws {
        guard let group = ranks?.link.group ?? replicas?.group else { return }
        // A layer's stages (PEPITA's two passes) share its optimizer and run on one rank.
        var owners: [ObjectIdentifier: Int] = [:]
        for (stage, trainingStage) in network.stages.enumerated() {
            let owner = ranks?.placement.stageRanks[stage] ?? 0
            for optimizer in trainingStage.optimizers {
                owners[ObjectIdentifier(optimizer)] = owner
            }
            for buffer in trainingStage.buffers { owners[ObjectIdentifier(buffer)] = owner }
        }
        func share(_ tensor: Tensor, from root: Int) throws {
            let device = tensor.device
            var values =
                root == group.rank
                ? try device.read(tensor) : [Float](repeating: 0, count: tensor.count)
            try group.broadcast(&values, from: root)
            if root != group.rank { try device.write(values, to: tensor) }
        }
        func share(_ parameter: Parameter, from root: Int) throws {
            try share(parameter.value, from: root)
            for name in parameter.state.keys.sorted() {
                try share(parameter.state[name]!, from: root)
            }
        }
        let optimizers = network.optimizers
        for optimizer in optimizers {
            let root = owners[ObjectIdentifier(optimizer)] ?? 0
            for parameter in optimizer.parameters { try share(parameter, from: root) }
        }
        for buffer in network.buffers {
            try share(buffer, from: owners[ObjectIdentifier(buffer)] ?? 0)
        }
        var steps = optimizers.map { optimizer in
            owners[ObjectIdentifier(optimizer)] == group.rank ? Double(optimizer.steps) : 0
        }
        try group.sum(&steps)
        for (optimizer, count) in zip(optimizers, steps) { optimizer.steps = Int(count) }
    }
}
