import Foundation
import Testing

@testable import SigProp

/// Networks other than the presets: very deep and very shallow ones, strided and 5x5
/// convolutions, average pooling, CIFAR-shaped input, and networks of the other rules. Each
/// trains on both backends and on a split CPU, with the same numbers under every schedule and
/// placement.
@Suite struct ArchitectureTests {
    static let networks: [TestNetwork] = [
        // 20 learning blocks.
        .mlp(hiddenLayers: 20, width: 8),
        // One: the signal block is the only block.
        TestNetwork(description: NetworkDescription(layers: [.dense(12)])),
        // One conv block, whose output the output layer flattens.
        TestNetwork(description: try! NetworkDescription(layerList: "conv4")),
        // Stride 2, a 5x5 kernel, average pooling.
        TestNetwork(
            description: try! NetworkDescription(layerList: "conv6k5s2p2,conv6,avgpool3,dense16")),
        // CIFAR-shaped input with every kind of layer.
        TestNetwork(
            description: try! NetworkDescription(
                layerList: "conv8k5s2p2,pool,conv8,dropout0.1,avgpool2,conv8k3s2p1,dense16"),
            inputShape: [3, 32, 32]),
        // Pools that keep the edges their size does not divide: 8x8 to 3x3 to 2x2, a partial
        // window at each edge.
        TestNetwork(
            description: {
                var description = try! NetworkDescription(
                    layerList: "conv6,maxpool3,conv6,avgpool2,dense8")
                description.ceilPools = true
                return description
            }(), inputShape: [1, 8, 8]),
        // Forward-Forward: three layers (two readout layers), and one (its own readout).
        .forwardForward([16, 12, 8]),
        .forwardForward([10]),
        // PEPITA: two hidden layers, each run twice per batch on one stream, one dropout mask
        // serving both passes.
        TestNetwork(
            description: try! NetworkDescription(layerList: "dense16,dropout0.2,dense8"),
            rule: LearningRule(.pepita)),
        // Error Forward-Propagation under each first pass, each block run twice per batch on
        // one stream: dense blocks with dropout, and conv blocks with pooling.
        TestNetwork(
            description: try! NetworkDescription(layerList: "dense16,dropout0.2,dense8"),
            rule: LearningRule(.efp)),
        TestNetwork(
            description: try! NetworkDescription(layerList: "conv4,pool,conv6,dense8"),
            rule: LearningRule(.efp, errorFirstPass: .learn)),
        // Spiking networks: dense spiking blocks learning from a surrogate at every step on
        // rate-encoded images, and spiking conv blocks with pooling learning from the mean
        // membrane, reset to zero, on latency-encoded images, with learned betas and
        // thresholds.
        .spiking("lif16,lif8", learning: .surrogate, lossTiming: .step, encoding: .rate),
        .spiking("lifconv4,pool,lifconv6,lif8", reset: .zero, encoding: .latency).with {
            $0.spiking.learnBeta = true
            $0.spiking.learnThreshold = true
        },
    ]

    static var options: TrainingOptions {
        var options = TrainingOptions()
        options.batchSize = 32
        options.optimizer.learningRate = 2e-3
        options.validation = nil
        return options
    }

    /// One epoch of `config` on `devices` under `schedule`: every weight and optimizer state.
    static func trainedState(
        _ config: TestNetwork, devices: [Device], schedule: Schedule
    ) throws -> [Float] {
        try TrainingTests.state(try trained(config, devices: devices, schedule: schedule))
    }

    /// The network of `config` on `devices` after one epoch under `schedule`.
    static func trained(_ config: TestNetwork, devices: [Device], schedule: Schedule) throws
        -> Network
    {
        let network = try config.build(devices, optimizer: Self.options.optimizer, seed: 11)
        let trainer = try Trainer(
            network: network, options: Self.options,
            train: try TrainingTests.syntheticData(count: 96, seed: 1, shape: config.inputShape),
            test: try TrainingTests.syntheticData(count: 32, seed: 2, shape: config.inputShape),
            schedule: schedule)
        guard case .completed(let metrics) = try trainer.runEpoch(0) else {
            throw SigPropError.configuration("the epoch did not complete")
        }
        #expect(metrics.blockLosses.count == network.stages.filter(\.reportsLoss).count - 1)
        #expect(metrics.blockLosses.allSatisfy(\.isFinite) && metrics.outputLoss.isFinite)
        return network
    }

    @Test(arguments: TestBackend.available, networks)
    func trainsWithTheSameNumbersPipelinedAndSequential(
        _ backend: TestBackend, _ config: TestNetwork
    ) throws {
        let device = try backend.device()
        let initial = try TrainingTests.state(
            try config.build(device, optimizer: Self.options.optimizer, seed: 11))
        let sequential = try Self.trainedState(
            config, devices: [device], schedule: Schedule(.sequential))
        let pipelined = try Self.trainedState(
            config, devices: [device], schedule: Schedule(.pipelined))
        #expect(sequential != initial, "training changed the weights")
        let differing = zip(pipelined, sequential).filter { $0 != $1 }.count
        #expect(pipelined == sequential, "pipelined differs from sequential in \(differing) values")
    }

    /// SIGPROP_SPLIT=2 on the CPU: the blocks on two devices, the numbers of one.
    @Test(arguments: networks)
    func aSplitCPUGivesTheNumbersOfOne(_ config: TestNetwork) throws {
        let one = try Self.trainedState(
            config, devices: [try TestBackend.cpu.device()], schedule: Schedule(.sequential))
        let split = try Self.trainedState(
            config, devices: try MultiDeviceTests.splitCPU(2), schedule: Schedule(.pipelined))
        #expect(split == one, "\(zip(split, one).filter { $0 != $1 }.count) values differ")
    }

    /// SIGPROP_SPLIT=2 on OpenCL (PoCL's sub-devices): the numbers of the whole device.
    @Test(
        .enabled(if: (TestBackend.openCLEntries.first?.info.maxSubDevices ?? 0) >= 2),
        arguments: networks)
    func aSplitOpenCLDeviceGivesTheNumbersOfTheWhole(_ config: TestNetwork) throws {
        let whole = try Self.trainedState(
            config, devices: [try TestBackend.opencl.device()], schedule: Schedule(.sequential))
        let split = try Self.trainedState(
            config, devices: try MultiDeviceTests.splitOpenCL(2), schedule: Schedule(.pipelined))
        #expect(split == whole, "\(zip(split, whole).filter { $0 != $1 }.count) values differ")
    }
}
