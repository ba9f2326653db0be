import Foundation
import Testing

@testable import SigProp

/// A network over several devices: placement balanced by work, only the activations cross
/// between devices, and the same numbers as on one device.
@Suite struct MultiDeviceTests {
    @Test func placementIsContiguousAndBalanced() throws {
        #expect(Placement.groups(costs: [1, 1, 1, 1], groups: 2) == [0, 0, 1, 1])
        #expect(Placement.groups(costs: [8, 1, 1, 1, 1], groups: 2) == [0, 1, 1, 1, 1])
        #expect(Placement.groups(costs: [1, 2, 3, 4, 0.1], groups: 3) == [0, 0, 1, 2, 2])
        #expect(Placement.groups(costs: [5, 5], groups: 4) == [0, 1])
        #expect(Placement.groups(costs: [5, 5, 5], groups: 1) == [0, 0, 0])
        // The default mlp on two devices: the signal block (784 + 10 inputs) with block 2, block 3
        // with the output layer.
        func groups(_ description: NetworkDescription) throws -> [Int] {
            let plan = try NetworkPlan(description, inputShape: [1, 28, 28], classes: 10)
            return Placement.groups(costs: plan.stages.map(\.multiplyAdds), groups: 2)
        }
        #expect(try groups(.mlp()) == [0, 0, 1, 1])
        #expect(try groups(.cnn) == [0, 0, 1, 1, 1])
    }

    static func splitCPU(_ parts: Int) throws -> [Device] {
        try BackendSelection(environment: [
            "SIGPROP_BACKEND": "cpu", "SIGPROP_SPLIT": String(parts),
        ]).makeDevices().devices
    }

    static func splitOpenCL(_ parts: Int) throws -> [Device] {
        try BackendSelection(environment: [
            "SIGPROP_BACKEND": "opencl", "SIGPROP_SPLIT": String(parts),
        ]).makeDevices().devices
    }

    /// Two epochs of the same network on `devices` under `schedule`: weights and optimizer state.
    static func trainedState(
        _ config: TestNetwork, devices: [Device], schedule: Schedule, options: TrainingOptions
    ) throws -> [Float] {
        let network = try config.build(devices, optimizer: options.optimizer, seed: 4)
        return try ScheduleTests.trainedState(
            network, options: options, schedule: schedule, epochs: 2)
    }

    static var configs: [TestNetwork] {
        [.mlp(hiddenLayers: 4, width: 24), .cnn().with { $0 = $0.withDropout(0.1) }]
    }

    static var options: TrainingOptions {
        var options = TrainingOptions()
        options.batchSize = 32
        options.optimizer.learningRate = 2e-3
        return options
    }

    /// The CPU split in two (one core each): blocks on both, bit-identical to one device.
    @Test(arguments: configs)
    func splitCPUGivesTheSameNumbers(_ config: TestNetwork) throws {
        let devices = try Self.splitCPU(2)
        #expect(
            devices.count == 2
                && devices.allSatisfy {
                    $0.capabilities.computeUnits == ProcessInfo.processInfo.activeProcessorCount / 2
                })
        let network = try config.build(devices, optimizer: Self.options.optimizer, seed: 4)
        #expect(network.devices.count == 2, "both devices hold blocks")
        for parameter in try #require(network.signal).optimizer.parameters {
            #expect(parameter.value.device === devices[0])
        }
        for parameter in try #require(network.output).optimizer.parameters {
            #expect(parameter.value.device === devices[1])
        }
        let one = try Self.trainedState(
            config, devices: [try Device.cpu()], schedule: Schedule(.sequential),
            options: Self.options)
        for kind in Schedule.Kind.allCases {
            let split = try Self.trainedState(
                config, devices: devices, schedule: Schedule(kind), options: Self.options)
            #expect(
                split == one,
                Comment(
                    rawValue: "\(kind) on two CPU devices differs from one device in "
                        + "\(zip(split, one).filter { $0 != $1 }.count) values")
            )
        }
    }

    /// PoCL split by clCreateSubDevices into two one-unit devices: the same numbers as the
    /// whole device (on CPU devices the kernels and their parameters do not depend on the unit
    /// count). Needs a driver that splits devices (PoCL does; NVIDIA's does not).
    @Test(
        .enabled(if: (TestBackend.openCLEntries.first?.info.maxSubDevices ?? 0) >= 2),
        arguments: configs)
    func openCLSubDevicesGiveTheSameNumbers(_ config: TestNetwork) throws {
        let devices = try Self.splitOpenCL(2)
        #expect(devices.count == 2 && devices.allSatisfy { $0.kind == .opencl })
        #expect(devices[0].name.contains("part 1 of 2"))
        let whole = try TestBackend.opencl.device()
        let one = try Self.trainedState(
            config, devices: [whole], schedule: Schedule(.sequential), options: Self.options)
        let split = try Self.trainedState(
            config, devices: devices, schedule: Schedule(.pipelined), options: Self.options)
        #expect(
            split == one,
            Comment(
                rawValue: "two sub-devices differ from the whole device in "
                    + "\(zip(split, one).filter { $0 != $1 }.count) values")
        )
    }

    @Test func splitAndDeviceListsAreChecked() throws {
        #expect { _ = try BackendSelection(environment: ["SIGPROP_SPLIT": "0"]) } throws: {
            "\($0)".contains("SIGPROP_SPLIT=0")
        }
        #expect { _ = try BackendSelection(environment: ["SIGPROP_SPLIT": "two"]) } throws: {
            "\($0)".contains("integer >= 1")
        }
        #expect { _ = try BackendSelection(environment: ["SIGPROP_DEVICE": "0,,1"]) } throws: {
            "\($0)".contains("empty entry")
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        #expect { _ = try Self.splitCPU(cores + 1) } throws: { "\($0)".contains("cannot divide") }
        if !TestBackend.openCLEntries.isEmpty {
            let twice = try BackendSelection(environment: [
                "SIGPROP_BACKEND": "opencl", "SIGPROP_DEVICE": "0,0",
            ])
            #expect { _ = try twice.makeDevices() } throws: {
                "\($0)".contains("names a device twice")
            }
            let units = TestBackend.openCLEntries[0].info.computeUnits
            #expect { _ = try Self.splitOpenCL(units + 1) } throws: {
                "\($0)".contains("cannot split")
            }
        }
    }
}
