import Foundation

/// How batches run on the devices' streams. Both schedules give the same numbers (the
/// ordering rules of docs/signal-propagation.md hold in each); only the time differs.
public struct Schedule: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A stream per stage, several batches in flight: block l learns while block l+1
        /// computes, and batch b+1 enters block 1 while later blocks work on batch b.
        case pipelined
        /// Every stage on one stream, one batch at a time: the reference's order.
        case sequential
    }

    public var kind: Kind
    /// Batches in flight at most (pipelined); nil: one per stage, enough to fill the pipeline.
    public var depth: Int?

    public init(_ kind: Kind = .pipelined, depth: Int? = nil) {
        self.kind = kind
        self.depth = depth
    }

    /// Batches in flight at most for a network of `stages` stages.
    public func batchesInFlight(stages: Int) -> Int {
        switch kind {
        case .pipelined: depth ?? stages
        case .sequential: 1
        }
    }
}

extension Schedule {
    /// Multiply-adds per batch of the heaviest stage below which a GPU runs Signal
    /// Propagation's sequential schedule by default: between the `mlp` and the `cnn` as
    /// measured on the H200.
    public static let gpuPipelineWork = 5e8
    /// Bytes of activations that the pipeline's extra batches in flight may hold on a CPU by
    /// default: beyond them the sequential schedule is chosen.
    public static let cpuPipelineMemory = 512.0 * 1024 * 1024

    /// The default schedule for `plan` trained by `rule` on devices of `capabilities` with
    /// batches of `batchSize` (the target stream of `targetRows` rows), and why. Both give the
    /// same numbers; the choice follows full epochs measured alternating (docs/performance.md).
    ///
    /// On CPUs (OpenBLAS or PoCL) every operation already spreads over all cores, and the
    /// pipeline ran 1.01–1.13x sequential, while each batch it keeps in flight holds that
    /// batch's activations: 1.8 GiB against 0.6 GiB resident for the `cnn`, 12 GiB for the
    /// full `vgg8b`. So it is chosen where its extra batches hold little memory, unless the
    /// rule runs a batch twice: a block's two passes share its stream and the second waits for
    /// the batch's output, so block 1's next batch waits for the whole first pass, and the
    /// pipeline ran 0.93x (Error Forward-Propagation's `predict`), 0.97–1.01x (its `learn`,
    /// with 150 MiB more resident) and 0.94x (PEPITA) sequential. On the H200 it ran
    /// 1.37–1.39x for the `cnn` (1.85 G multiply-adds per batch in its heaviest stage) and
    /// 1.21x for the full `vgg8b`, but 0.78–0.96x for the `mlp` (0.13 G): a batch's stages
    /// are then so short that the extra queues and events cost more than the overlap wins. The
    /// other rules compute each layer's batch more than once (two passes; Forward-Forward's
    /// positive and negative rows), and on the same short dense layers the pipeline ran
    /// 1.09–1.28x (Forward-Forward), 1.04–1.21x (Error Forward-Propagation) and 1.01–1.10x
    /// (PEPITA) sequential there. A spiking block
    /// runs T steps of its neurons beyond the products its multiply-adds count: the `snn-mlp`
    /// (0.10 G) ran 1.03–1.21x sequential there. Forward-Forward's hard negatives wait for the
    /// batch before on every device, so the sequential schedule has nothing to lose there.
    public static func automatic(
        for plan: NetworkPlan, rule: LearningRule = LearningRule(),
        capabilities: [DeviceCapabilities],
        batchSize: Int, targetRows: Int
    ) -> (schedule: Schedule, reason: String) {
        if let chunk = plan.timeChunk {
            return (
                Schedule(.sequential),
                "--time-chunk \(chunk) runs a batch through every block from the first stage, "
                    + "so batches cannot overlap"
            )
        }
        if rule.choosesHardNegatives {
            return (
                Schedule(.sequential),
                "hard negatives are chosen with the weights after the batch before, so batches "
                    + "cannot overlap"
            )
        }
        guard capabilities.contains(where: \.gpu) else {
            if rule.passes == 2 {
                return (
                    Schedule(.sequential),
                    "under \(rule) a batch's second pass waits for its output, so on CPUs the "
                        + "pipeline has little to overlap (--schedule pipelined chooses it)"
                )
            }
            let extra =
                plan.activationBytes(batchSize: batchSize, targetRows: targetRows)
                * Double(plan.stages.count - 1)
            let held = formatBytes(UInt64(extra))
            if extra <= cpuPipelineMemory {
                return (
                    Schedule(.pipelined),
                    "on CPUs the pipeline gains a few percent for \(held) more memory"
                )
            }
            return (
                Schedule(.sequential),
                "on CPUs the pipeline gains a few percent at most and would hold \(held) more "
                    + "(--schedule pipelined chooses it)"
            )
        }
        let heaviest = plan.stages.map(\.multiplyAdds).max() ?? 0
        let work = heaviest * Double(batchSize)
        let giga = String(format: "%.2f", work / 1e9)
        if work < gpuPipelineWork && rule.name != .sigprop {
            return (
                Schedule(.pipelined),
                "under \(rule) each layer computes a batch more than once (two passes, or "
                    + "positive and negative rows), which gives a GPU room to overlap"
            )
        }
        if work < gpuPipelineWork && plan.isSpiking {
            return (
                Schedule(.pipelined),
                "a spiking block runs its neurons' time steps beside its products, which gives "
                    + "a GPU room to overlap"
            )
        }
        if work < gpuPipelineWork {
            return (
                Schedule(.sequential),
                "the heaviest stage's \(giga) G multiply-adds per batch are too short on a GPU "
                    + "to pay for the pipeline's queues and events"
            )
        }
        return (
            Schedule(.pipelined),
            "the heaviest stage's \(giga) G multiply-adds per batch leave a GPU room to overlap"
        )
    }
}

/// What runs where and when for one network: a stream per stage (pipelined) or per device
/// (sequential), the storage pools, the bridge between devices, the batches in flight with
/// their events, and the trace spans. The network holds the blocks and what they compute;
/// the trainer holds the epoch; this holds the order.
public final class Pipeline {
    public let network: Network
    public let schedule: Schedule
    /// One stream per stage (pipelined) or one per device (sequential), and one per device to
    /// read results on.
    let stageStreams: [Stream]
    let readbacks: [ObjectIdentifier: Stream]
    /// Storage of the stages' tensors, reused from batch to batch (a pool per device).
    let pools: [ObjectIdentifier: BufferPool]
    /// Carries activations between devices when the network spans several.
    let bridge: DeviceBridge?
    /// When the network's stages spread over several processes: which rank runs each stage,
    /// and the link that carries activations between them.
    let ranks: (placement: RankPlacement, link: RankLink)?
    /// When every rank trains a replica on its share of each batch: the averaging of the
    /// gradients.
    let replicas: GradientExchange?
    /// When set, every stage of every batch is recorded here.
    public var trace: Trace?
    private var inFlight: [InFlight] = []
    /// Whether `begin` ran since the last `end` (`submit` runs it when not).
    private var begun = false

    /// A batch enqueued and not yet retired.
    private struct InFlight {
        let index: Int
        let labels: [Int32]
        /// The batch's samples over all ranks, and this rank's share of them.
        let samples: Int
        let share: Double
        /// Per stage, the rows' losses (the signal block first, the output layer last); nil
        /// for a stage another rank runs.
        let rowLosses: [Tensor?]
        /// Per spiking block this process runs, its stage and the batch's mean spikes per unit
        /// per step ([1]).
        let spikeRates: [(stage: Int, rate: Tensor)]
        /// The output's logits; nil where another rank runs the last stage.
        let logits: Tensor?
        /// One event per stage, complete when the stage (its update included) is done.
        let done: [Event]
        /// Sends of its activations to other ranks, left once they were read.
        let sends: [DispatchGroup]
        /// The pools' generations when the batch was enqueued.
        let generations: [ObjectIdentifier: Int]
    }

    /// What a batch gave once it is done: per stage the sum of its rows' losses, how many of
    /// its samples the output layer predicted right (from the logits before its update), and
    /// per spiking block the mean of its units' spikes per step. In a pipeline over ranks,
    /// rank 0 has every rank's figures; another rank, its own stages' (zeros elsewhere).
    public struct RetiredBatch: Sendable {
        public let index: Int
        /// The batch's samples (over all ranks under data parallelism).
        public let samples: Int
        public let lossSums: [Double]
        public let correct: Int
        public let spikeRates: [Double]
    }

    /// Refuses, before any batch, batches of `batchSize` whose activations cannot fit next to
    /// the parameters (the target stream of one row per class where `kRowShortcut` is exact).
    /// Without a `schedule`, `Schedule.automatic` chooses one for the network and its devices.
    /// With a `distribution` in `pipeline` mode, this process runs the stages of its rank
    /// (`NetworkPlan.stageRanks`) and exchanges activations with the other ranks; in `data`
    /// mode it trains every stage on its share of each batch and averages the gradients (the
    /// weights then learn unfused: the sum sits between a gradient and its step).
    public init(
        network: Network, schedule: Schedule? = nil, batchSize: Int, kRowShortcut: Bool = true,
        distribution: Distribution? = nil
    ) throws {
        let targetRows = network.plan.targetRows(
            batchSize: batchSize, kRowShortcut: kRowShortcut && network.rule.allowsKRowShortcut)
        let schedule =
            schedule
            ?? Schedule.automatic(
                for: network.plan, rule: network.rule,
                capabilities: network.stageDevices.map(\.capabilities),
                batchSize: batchSize, targetRows: targetRows
            ).schedule
        if let depth = schedule.depth, depth < 1 {
            throw SigPropError.configuration(
                "--pipeline-depth \(depth) must be at least 1 (batches in flight)")
        }
        if let chunk = network.plan.timeChunk {
            if schedule.kind == .pipelined {
                throw SigPropError.configuration(
                    "--time-chunk \(chunk) runs a batch through every block from the first "
                        + "stage, which reads the later blocks' weights, so batches cannot "
                        + "overlap: use --schedule sequential, or drop --time-chunk")
            }
            if distribution != nil {
                throw SigPropError.configuration(
                    "--time-chunk \(chunk) runs every block on one device, and over MPI ranks "
                        + "the blocks are spread or replicated: train on one process, or drop "
                        + "--time-chunk")
            }
        }
        if distribution != nil, network.rule.name == .pepita, network.rule.mirroring != nil {
            throw SigPropError.configuration(
                "PEPITA's weight mirroring trains in one process: its feedback factors are "
                    + "composed on the first layer's device and are not averaged over ranks; run "
                    + "without mpirun or leave --pepita-mirror out")
        }
        self.network = network
        self.schedule = schedule
        ranks =
            try distribution.flatMap { distribution in
                guard distribution.mode == .pipeline else { return nil }
                return (
                    try RankPlacement(
                        network: network, rank: distribution.rank, ranks: distribution.ranks),
                    RankLink(group: distribution.group)
                )
            }
        replicas = try distribution.flatMap { distribution in
            guard distribution.mode == .data else { return nil }
            try Self.checkReplicable(
                network, batchSize: batchSize, ranks: distribution.ranks,
                kRowShortcut: kRowShortcut)
            let exchange = GradientExchange(group: distribution.group)
            for device in network.devices { device.fusesWeightUpdates = false }
            for parameter in network.parameters { parameter.gradientExchange = exchange }
            return exchange
        }
        let devices = network.devices
        let pools = Dictionary(
            uniqueKeysWithValues: devices.map { (ObjectIdentifier($0), BufferPool()) })
        self.pools = pools
        func pool(_ device: Device) -> BufferPool { pools[ObjectIdentifier(device)]! }
        // A stage runs on its layer's stream: under PEPITA a layer's two passes share one, so
        // batch b+1's clean pass follows batch b's update there, as in the sequential order.
        let layerDevices = network.stageDevices
        switch schedule.kind {
        case .pipelined:
            // Each device's units shared among its stages doing heavy work (all but the output
            // layer).
            let layerStreams = try layerDevices.map { device in
                let heavy = (0..<network.blockCount).filter { layerDevices[$0] === device }.count
                return try device.makeStream(
                    coreLimit: max(1, device.capabilities.computeUnits / max(1, heavy)),
                    pool: pool(device))
            }
            stageStreams = (0..<network.stageCount).map { layerStreams[network.stageLayer($0)] }
        case .sequential:
            let streams = try devices.map { try $0.makeStream(pool: pool($0)) }
            stageStreams = (0..<network.stageCount).map { stage in
                streams.first { $0.device === layerDevices[network.stageLayer(stage)] }!
            }
        }
        readbacks = Dictionary(
            uniqueKeysWithValues: try devices.map {
                (ObjectIdentifier($0), try $0.makeStream(pool: pool($0)))
            })
        bridge = devices.count > 1 ? DeviceBridge() : nil
        try MemoryEstimate(network.plan).checkActivations(
            on: network.stageDevices,
            batches: MemoryEstimate.Batches(
                size: batchSize, targetRows: targetRows, inFlight: depth))
    }

    /// Batches in flight at most. A pipeline over ranks keeps one per stage under either
    /// schedule: rank 0 retires a batch once the last rank has, so with fewer the ranks would
    /// take turns instead of working at once.
    public var depth: Int {
        guard ranks != nil else { return schedule.batchesInFlight(stages: network.stageCount) }
        return schedule.depth ?? network.stageCount
    }

    /// The processes training the network together (nil: this one alone).
    var group: (any ProcessGroup)? { ranks?.link.group ?? replicas?.group }

    /// How many processes train the network together.
    public var rankCount: Int { group?.size ?? 1 }

    /// Since the pipeline began: the bytes this process sent to other ranks (a pipeline's
    /// activations; replicas' gradients, each float once) and the seconds it waited on them (a
    /// pipeline's host for activations; replicas' worker in the sums, which overlap compute).
    public var communication: (bytesSent: Int, secondsWaiting: Double) {
        if let link = ranks?.link {
            link.drain()
            return (link.bytesSent, link.secondsWaiting)
        }
        if let replicas {
            replicas.drain()
            return (4 * replicas.valuesExchanged, replicas.secondsSumming)
        }
        return (0, 0)
    }

    /// Whether this process runs stage `stage` (every stage, but in a pipeline over ranks).
    public func runsStage(_ stage: Int) -> Bool { ranks?.placement.isLocal(stage) ?? true }

    /// Allocations the pools could not serve from storage already there.
    var poolMisses: Int { pools.values.reduce(0) { $0 + $1.misses } }

    /// Before a run of batches (the first `submit` calls it): storage of retired batches is
    /// reused by later ones (see BufferPool), so whatever the stages' streams did before must
    /// be done first; and parameters are written on the default streams (initialisation, a
    /// checkpoint's values), which the stage streams do not wait for.
    public func begin() throws {
        begun = true
        for device in network.devices { try device.defaultStream.synchronize() }
        for stream in stageStreams { try stream.synchronize() }
        for pool in pools.values { pool.reclaimAll() }
        for stream in stageStreams where trace != nil && stream.queue.kernelLog == nil {
            stream.queue.kernelLog = KernelLog()
        }
    }

    /// Enqueues one training batch (`index` of `epoch`: traces name it, and a rule may change
    /// by epoch, as PEPITA's pre-mirroring) without waiting for it,
    /// then retires the oldest batches until fewer than `depth` remain in flight; returns the
    /// batches retired, oldest first. `wrongLabels`: Forward-Forward's negatives for the
    /// batch's samples (nil: drawn per batch).
    public func submit(
        images: [Float], labels: [Int32], loss: LocalLoss, learningRate: Float,
        kRowShortcut: Bool = true, dropout: DropoutMasks? = nil, wrongLabels: [Int32]? = nil,
        generator: SeededGenerator = SeededGenerator(seed: 0), index: Int = 0, epoch: Int = 0
    ) throws -> [RetiredBatch] {
        if !begun { try begin() }
        let samples = labels.count
        let wholeBatch = labels
        var (images, labels, wrongLabels) = (images, labels, wrongLabels)
        if let replicas {
            let rows = shareOfBatch(samples, group: replicas.group)
            let features = images.count / samples
            images = Array(images[(rows.lowerBound * features)..<(rows.upperBound * features)])
            labels = Array(labels[rows])
            wrongLabels = wrongLabels.map { Array($0[rows]) }
            replicas.share = Float(rows.count) / Float(samples)
        }
        let generations = pools.mapValues { $0.advance() }
        let spans: StageSpan? = trace.map { trace in
            { [network] stage, part, begin, end in
                trace.add(
                    "\(network.stageName(stage)).\(part) b\(index + 1)", stage: stage,
                    epoch: epoch + 1, batch: index + 1, start: begin, end: end)
            }
        }
        let batch = BatchContext(
            images: images, labels: labels, inputShape: network.inputShape,
            classes: network.classes, learningRate: learningRate, loss: loss, dropout: dropout,
            byClass: kRowShortcut && network.kRowShortcutIsExact, generator: generator)
        batch.epoch = epoch
        batch.wrongLabels = wrongLabels
        if replicas != nil { batch.columnLabels = wholeBatch }
        let (rowLosses, spikeRates, logits, done, sends) = try enqueue(batch, trace: spans)
        inFlight.append(
            InFlight(
                index: index, labels: labels, samples: samples,
                share: Double(labels.count) / Double(samples), rowLosses: rowLosses,
                spikeRates: spikeRates,
                logits: logits, done: done, sends: sends, generations: generations))
        var retired: [RetiredBatch] = []
        while inFlight.count >= depth { retired.append(try retireOldest()) }
        return retired
    }

    /// Waits for every batch in flight; returns them, oldest first.
    public func drain() throws -> [RetiredBatch] {
        var retired: [RetiredBatch] = []
        while !inFlight.isEmpty { retired.append(try retireOldest()) }
        return retired
    }

    /// Waits for the oldest batch, reads its losses and predictions, lets its storage go.
    private func retireOldest() throws -> RetiredBatch {
        let batch = inFlight.removeFirst()
        for event in batch.done { try event.wait() }
        // A send may still be reading what the batch hands on (the next rank takes it when
        // it is ready): the storage goes back to the pool after.
        for send in batch.sends { send.wait() }
        try bridge?.check()
        try ranks?.link.check()
        try replicas?.check()
        var figures = BatchFigures(stages: network.stageCount)
        for (stage, rows) in batch.rowLosses.enumerated() {
            guard let rows else { continue }
            figures.lossSums[stage] = try rows.device.read(rows, on: readback(rows)).reduce(0) {
                $0 + Double($1)
            }
        }
        if let logits = batch.logits {
            let predictions = Trainer.argmax(
                try logits.device.read(logits, on: readback(logits)), columns: network.classes)
            figures.correct = Double(zip(predictions, batch.labels).filter { $0 == Int($1) }.count)
        }
        for (stage, rate) in batch.spikeRates {
            figures.spikeRates[stage] = Double(try rate.device.read(rate, on: readback(rate))[0])
        }
        for (device, generation) in batch.generations {
            pools[device]!.reclaim(through: generation)
        }
        if let link = ranks?.link { try figures.gather(over: link.group) }
        if let replicas {
            // Each rank's losses are means over its rows: weighted by its share, they add up
            // to the batch's.
            figures.lossSums = figures.lossSums.map { $0 * batch.share }
            try figures.gather(over: replicas.group)
        }
        return RetiredBatch(
            index: batch.index, samples: batch.samples, lossSums: figures.lossSums,
            correct: Int(figures.correct), spikeRates: figures.spikeRates.compactMap { $0 })
    }

    /// After a run of batches (all retired): the storage back to the pools, and the kernels
    /// of the stage streams into the trace.
    public func end() throws {
        begun = false
        for pool in pools.values { pool.reclaimAll() }
        guard let trace else { return }
        try trace.resolve()
        var seen: Set<ObjectIdentifier> = []
        for stream in stageStreams where seen.insert(ObjectIdentifier(stream.queue)).inserted {
            guard let log = stream.queue.kernelLog else { continue }
            let stages = Set(
                (0..<stageStreams.count).filter { stageStreams[$0].queue === stream.queue })
            trace.addKernels(try log.drain(), stages: stages)
        }
    }

    /// Waits for everything enqueued on the stage streams and the bridge, whatever their
    /// errors (it runs while an error is on its way out), and forgets the batches in flight.
    /// An error leaves later batches running, and the caller may then let their storage go
    /// or exit the process, which unmaps OpenBLAS's buffers under the products still running.
    public func finishEnqueuedWork() {
        for stream in stageStreams { try? stream.synchronize() }
        bridge?.drain()
        ranks?.link.drain()
        replicas?.drain()
        inFlight.removeAll()
    }

    /// Where results of `tensor`'s device are read.
    private func readback(_ tensor: Tensor) -> Stream {
        readbacks[ObjectIdentifier(tensor.device)]!
    }

    /// A span of one stage's work on its stream, for traces: (stage, "forward" / "update",
    /// start, end).
    typealias StageSpan = (_ stage: Int, _ part: String, _ start: Event, _ end: Event) -> Void

    /// Enqueues one training batch. Stage `l` runs on `stageStreams[l]`. A stage waits for its
    /// predecessor's outputs only, not for its update, so with a stream per stage block l
    /// learns while block l+1 computes; each block's outputs use its weights before its
    /// update, and its update comes before its next forward (its stream is in order).
    ///
    /// In a pipeline over ranks only this rank's stages run: the first of a run of them
    /// receives what the previous rank's stage handed on, and the last sends its outputs on.
    private func enqueue(_ batch: BatchContext, trace: StageSpan?) throws
        -> (
            rowLosses: [Tensor?], spikeRates: [(stage: Int, rate: Tensor)], logits: Tensor?,
            done: [Event], sends: [DispatchGroup]
        )
    {
        let streams = stageStreams
        var losses: [Tensor?] = []
        var spikeRates: [(stage: Int, rate: Tensor)] = []
        var done: [Event] = []
        var sends: [DispatchGroup] = []
        var ready: Event?
        /// Orders stage `index` after its predecessor's outputs: by an event on the same device;
        /// across devices the `bridge` does it (or, without one, the host waits here and
        /// `arrive` copies through the host).
        func enter(_ index: Int) throws -> Stream {
            let stream = streams[index]
            guard index > 0, let ready else { return stream }
            if stream.device !== streams[index - 1].device {
                if bridge == nil { try ready.wait() }
            } else if stream.queue !== streams[index - 1].queue {
                try stream.wait(for: ready)
            }
            return stream
        }
        /// The previous stage's output as a tensor of `stream`'s device.
        func arrive(_ tensor: Tensor, on stream: Stream) throws -> Tensor {
            guard tensor.device !== stream.device else { return tensor }
            if let bridge, let ready { return try bridge.copy(tensor, after: ready, to: stream) }
            return try stream.device.transfer(tensor, on: stream)
        }
        var handedOn: [Tensor] = []
        let last = network.stageCount - 1
        for (index, stage) in network.stages.enumerated() {
            if let (placement, link) = ranks {
                guard placement.isLocal(index) else {
                    losses.append(nil)
                    continue
                }
                if index > 0, !placement.isLocal(index - 1) {
                    handedOn = try link.receive(
                        from: placement.stageRanks[index - 1], on: streams[index])
                    ready = nil
                }
            }
            let stream = try enter(index)
            let inputs = try handedOn.map { try arrive($0, on: stream) }
            let start = trace == nil ? nil : try stream.record()
            let pass = try stage.forward(inputs, batch: batch, on: stream)
            let outputs = try stream.record()
            ready = outputs
            if let (placement, link) = ranks, index < last, !placement.isLocal(index + 1) {
                sends.append(
                    link.send(pass.outputs, after: outputs, to: placement.stageRanks[index + 1]))
            }
            if let rate = pass.spikeRate { spikeRates.append((index, rate)) }
            losses.append(try pass.learn(stream))
            let end = try stream.record()
            done.append(end)
            if let trace, let start {
                trace(index, "forward", start, outputs)
                trace(index, "update", outputs, end)
            }
            handedOn = pass.outputs
        }
        return (losses, spikeRates, runsStage(last) ? handedOn[0] : nil, done, sends)
    }
}

/// One batch's figures as a pipeline over ranks gathers them on rank 0: per stage the sum of
/// its rows' losses and its spikes per unit per step (nil: not a spiking stage), and the
/// output layer's right predictions. Each rank fills in its own stages.
struct BatchFigures {
    var lossSums: [Double]
    var spikeRates: [Double?]
    var correct = 0.0

    init(stages: Int) {
        lossSums = [Double](repeating: 0, count: stages)
        spikeRates = [Double?](repeating: nil, count: stages)
    }

    /// Every rank's figures added up on rank 0 (the other ranks send theirs and keep them).
    mutating func gather(over group: any ProcessGroup) throws {
        let stages = lossSums.count
        guard group.rank == 0 else {
            let values =
                lossSums + [correct] + spikeRates.map { $0 ?? 0 }
                + spikeRates.map { $0 == nil ? 0 : 1 }
            try group.send(
                values.withUnsafeBytes { Array($0) }, to: 0, tag: ProcessGroupTag.batchFigures)
            return
        }
        for peer in 1..<group.size {
            let bytes = try group.receive(from: peer, tag: ProcessGroupTag.batchFigures)
            var values = [Double](repeating: 0, count: 3 * stages + 1)
            guard bytes.count == values.count * MemoryLayout<Double>.stride else {
                throw SigPropError.configuration(
                    "rank \(peer) sent a batch's figures of \(bytes.count) bytes for a model of "
                        + "\(stages) stages: the ranks run different models")
            }
            values.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
            for stage in 0..<stages {
                lossSums[stage] += values[stage]
                if values[2 * stages + 1 + stage] != 0 {
                    spikeRates[stage] = (spikeRates[stage] ?? 0) + values[stages + 1 + stage]
                }
            }
            correct += values[stages]
        }
    }
}
