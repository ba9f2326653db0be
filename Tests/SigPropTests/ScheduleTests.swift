import Foundation
import Testing

@testable import SigProp

/// The pipelined schedule (a stream per stage, several batches in flight) against the sequential
/// one: docs/signal-propagation.md's ordering rules hold in both, so the numbers must be the same.
@Suite struct ScheduleTests {
    static func options(batchSize: Int = 16) -> TrainingOptions {
        var options = TrainingOptions()
        options.batchSize = batchSize
        options.optimizer.learningRate = 2e-3
        return options
    }

    /// One epoch of `network` under `schedule`; every parameter and optimizer state after it.
    static func trainedState(
        _ network: Network, options: TrainingOptions, schedule: Schedule, epochs: Int = 1
    ) throws -> [Float] {
        let trainer = try Trainer(
            network: network, options: options,
            train: try TrainingTests.syntheticData(count: 256, seed: 1),
            test: try TrainingTests.syntheticData(count: 64, seed: 2), schedule: schedule)
        for epoch in 0..<epochs {
            guard case .completed = try trainer.runEpoch(epoch) else {
                throw SigPropError.configuration("epoch \(epoch) did not complete")
            }
        }
        return try TrainingTests.state(network)
    }

    /// The default schedule follows the measurements: on CPUs pipelined where its extra batches
    /// hold little memory (the `mlp`), else sequential (the `cnn`, `vgg8b`), and sequential
    /// where the blocks learn only once the output is known (PEPITA, Error
    /// Forward-Propagation's `predict`) or each batch waits for the one before (hard
    /// negatives); on a GPU, sequential for the `mlp` (short stages)
    /// under Signal Propagation but pipelined under the rules that compute a layer's batch more
    /// than once or are spiking, and pipelined for the `cnn` and `vgg8b`.
    @Test func theDefaultScheduleIsTheMeasuredFaster() throws {
        let cpu = try TestBackend.cpu.device().capabilities
        var gpu = cpu
        gpu.gpu = true
        func kind(
            _ description: NetworkDescription, _ capabilities: DeviceCapabilities,
            rule: LearningRule = LearningRule()
        ) throws -> Schedule.Kind {
            let plan = try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10)
            return Schedule.automatic(
                for: plan, rule: rule, capabilities: [capabilities], batchSize: 128,
                targetRows: 10
            ).schedule.kind
        }
        #expect(try kind(.mlp(), cpu) == .pipelined)
        #expect(try kind(.mlp(), cpu, rule: LearningRule(.efp)) == .sequential)
        #expect(
            try kind(.mlp(), cpu, rule: LearningRule(.efp, errorFirstPass: .learn)) == .sequential)
        #expect(try kind(.mlp(hiddenLayers: 1), cpu, rule: LearningRule(.pepita)) == .sequential)
        #expect(try kind(.mlp(hiddenLayers: 1), cpu, rule: LearningRule(.ff)) == .pipelined)
        var hard = LearningRule(.ff)
        hard.forwardForward.negatives = .hard
        for capabilities in [cpu, gpu] {
            #expect(try kind(.mlp(hiddenLayers: 1), capabilities, rule: hard) == .sequential)
        }
        #expect(try kind(.cnn, cpu) == .sequential)
        #expect(try kind(.vgg8b, cpu) == .sequential)
        #expect(try kind(.mlp(), gpu) == .sequential)
        for rule in [LearningRule(.ff), LearningRule(.pepita), LearningRule(.efp)] {
            #expect(try kind(.mlp(), gpu, rule: rule) == .pipelined, "\(rule)")
        }
        #expect(try kind(.snnMLP, gpu) == .pipelined)
        #expect(try kind(.cnn, gpu) == .pipelined)
        #expect(try kind(.vgg8b, gpu) == .pipelined)
    }

    /// Bit-identical on both backends: each block's operations run in the same order on the
    /// same inputs in both schedules, and no kernel's result depends on timing (no atomics,
    /// no reductions ordered by arrival), so only the interleaving across blocks changes.
    @Test(arguments: TestBackend.available)
    func pipelinedEqualsSequentialBitForBit(_ backend: TestBackend) throws {
        let device = try backend.device()
        let sequential = try Self.trainedState(
            try TrainingTests.network(device, width: 24), options: Self.options(),
            schedule: Schedule(.sequential), epochs: 2)
        for depth in [nil, 2, 7] {
            let pipelined = try Self.trainedState(
                try TrainingTests.network(device, width: 24), options: Self.options(),
                schedule: Schedule(.pipelined, depth: depth), epochs: 2)
            #expect(
                pipelined == sequential,
                Comment(
                    rawValue:
                        "pipelined (depth \(depth.map(String.init) ?? "default")) differs from sequential "
                        + "in \(zip(pipelined, sequential).filter { $0 != $1 }.count) of "
                        + "\(sequential.count) values")
            )
        }
    }

    /// The same with what could break it: a conv net (pooling, flatten, instance norm), dropout
    /// (masks drawn per batch on the host), the B-row target stream and max-rand.
    @Test(arguments: TestBackend.available)
    func pipelinedEqualsSequentialForConvNetsWithDropout(_ backend: TestBackend) throws {
        let device = try backend.device()
        let config = TestNetwork.cnn().with { $0 = $0.withDropout(0.2) }
        var options = Self.options(batchSize: 32)
        options.loss = .maxRandom
        var states: [[Float]] = []
        for schedule in [Schedule(.sequential), Schedule(.pipelined)] {
            let network = try config.build(device, optimizer: options.optimizer, seed: 5)
            states.append(try Self.trainedState(network, options: options, schedule: schedule))
        }
        #expect(
            states[0] == states[1],
            Comment(
                rawValue: "pipelined differs from sequential in "
                    + "\(zip(states[0], states[1]).filter { $0 != $1 }.count) values")
        )
    }

    /// The same on the kernels only GPUs run (the OpenCL device posing as a GPU, every product
    /// tiled in 8 x 8 tiles and K split wherever it is 32 deep or more, the fused update in
    /// tiles, grouped norms and channel sums): split-K sums and group reductions add in a fixed
    /// order, so the schedules still agree bit for bit. An mlp and the conv net above.
    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func pipelinedEqualsSequentialOnGPUKernels() throws {
        let entry = try #require(TestBackend.openCLEntries.first)
        let info = entry.info.posing(as: .gpu, computeUnits: 32)
        var parameters = KernelParameters.forDevice(info)
        (parameters.gemmTile, parameters.gemmWorkPerItem, parameters.gemmTileDepth) = (4, 2, 4)
        (parameters.gemmDirectBelow, parameters.gemmSplitBelow) = (0, 64)
        let cache = KernelTuningCache(
            file: URL(fileURLWithPath: "/nonexistent/kernel-tuning.json"),
            entries: [.init(for: info, parameters: parameters, tunedGFLOPS: 0, tableGFLOPS: nil)])
        let device = try Device.opencl(
            OpenCLDeviceEntry(info: info, id: entry.id), tuningCache: cache)
        #expect(device.kernelParameterOrigin != .table, "the test's parameters are in use")
        #expect(device.fusesWeightUpdates)

        let cnn = TestNetwork.cnn().with { $0 = $0.withDropout(0.2) }
        for (name, makeNetwork) in [
            ("mlp", { try TrainingTests.network(device, width: 24) }),
            (
                "cnn",
                {
                    try cnn.build(device, optimizer: Self.options().optimizer, seed: 5)
                }
            ),
        ] {
            var states: [[Float]] = []
            for schedule in [Schedule(.sequential), Schedule(.pipelined)] {
                states.append(
                    try Self.trainedState(
                        try makeNetwork(), options: Self.options(batchSize: 32), schedule: schedule)
                )
            }
            #expect(
                states[0] == states[1],
                Comment(
                    rawValue: "\(name): pipelined differs from sequential in "
                        + "\(zip(states[0], states[1]).filter { $0 != $1 }.count) values")
            )
        }
    }

    /// Storage of retired batches is reused: after the first epoch, a second one allocates no
    /// new tensor storage while training.
    @Test(arguments: TestBackend.available)
    func inFlightBatchesReuseStorage(_ backend: TestBackend) throws {
        let device = try backend.device()
        let trainer = try Trainer(
            network: try TrainingTests.network(device), options: Self.options(),
            train: try TrainingTests.syntheticData(count: 256, seed: 1),
            test: try TrainingTests.syntheticData(count: 64, seed: 2))
        _ = try trainer.runEpoch(0)
        let misses = trainer.pipeline.poolMisses
        #expect(misses > 0)
        _ = try trainer.runEpoch(1)
        #expect(
            trainer.pipeline.poolMisses == misses,
            Comment(
                rawValue:
                    "epoch 2 allocated \(trainer.pipeline.poolMisses - misses) new buffers for "
                    + "\(trainer.batchesPerEpoch) batches")
        )
    }

    /// The trace names every stage of every batch, as Chrome's trace-event format wants, and
    /// the sequential schedule never has two blocks busy at once.
    @Test(arguments: TestBackend.available)
    func traceRecordsEveryStage(_ backend: TestBackend) throws {
        let device = try backend.device()
        for kind in Schedule.Kind.allCases {
            let network = try TrainingTests.network(device)
            let trainer = try Trainer(
                network: network, options: Self.options(),
                train: try TrainingTests.syntheticData(count: 128, seed: 1),
                test: try TrainingTests.syntheticData(count: 32, seed: 2), schedule: Schedule(kind))
            let trace = Trace(rowNames: (0..<network.stageCount).map(network.stageName))
            trainer.pipeline.trace = trace
            _ = try trainer.runEpoch(0)
            let batches = trainer.batchesPerEpoch
            #expect(trace.spans.count == batches * 2 * network.stageCount)
            let names = Set(trace.spans.map(\.name))
            #expect(
                names.contains("block1.forward b1") && names.contains("block3.update b\(batches)")
                    && names.contains("output.update b2"))
            #expect(trace.spans.allSatisfy { $0.end >= $0.start })
            // Per row, a block's update follows its forward, and batch b+1 follows batch b.
            for stage in 0..<network.stageCount {
                let row = trace.spans.filter { $0.stage == stage }.sorted {
                    ($0.batch, $0.name) < ($1.batch, $1.name)
                }
                for (a, b) in zip(row, row.dropFirst()) {
                    #expect(a.end <= b.start, "\(a.name) ends after \(b.name) starts")
                }
            }
            // Kernels sit inside a span of their stage: every batch's products are there.
            #expect(trace.kernels.contains { $0.name.hasPrefix("gemm") && $0.batch == batches })
            for kernel in trace.kernels {
                #expect(
                    trace.spans.contains {
                        $0.stage == kernel.stage && $0.batch == kernel.batch
                            && $0.start <= kernel.start && kernel.start <= $0.end
                    })
            }
            #expect(Set(trace.kernels.map(\.batch)) == Set(1...batches))
            let json = try JSONSerialization.jsonObject(with: try trace.json()) as? [String: Any]
            let events = try #require(json?["traceEvents"] as? [[String: Any]])
            #expect(
                events.filter { $0["ph"] as? String == "X" }.count == trace.spans.count
                    + trace.kernels.count)
            #expect(events.filter { $0["ph"] as? String == "M" }.count == network.stageCount)
            if kind == .sequential { #expect(trace.overlapShare == 0) }
            #expect((0...1).contains(trace.overlapShare))
        }
    }

    @Test func overlapShareCountsTimeWithTwoRowsBusy() {
        let trace = Trace(rowNames: ["a", "b"])
        func span(_ stage: Int, _ start: UInt64, _ end: UInt64) -> Trace.Span {
            Trace.Span(name: "x", stage: stage, epoch: 1, batch: 1, start: start, end: end)
        }
        // Row a busy 0-10 (two adjacent spans), row b 5-20: 5 of 20 busy units overlap.
        #expect(Trace.overlapShare(of: [span(0, 0, 4), span(0, 4, 10), span(1, 5, 20)]) == 0.25)
        #expect(Trace.overlapShare(of: []) == 0)
        #expect(trace.overlapShare == 0)
    }
}
