import Foundation
import Testing

@testable import SigProp

/// Runs that fail: an error in the middle of an epoch. The error reaches the caller with its
/// message, and nothing crashes on the way out.
@Suite(.serialized) struct FailureTests {
    /// A backend, whole or divided into two devices (`SIGPROP_SPLIT=2`: the blocks on both,
    /// activations crossing through the device bridge).
    struct Setup: Sendable, CustomTestStringConvertible {
        let backend: TestBackend
        let parts: Int

        var testDescription: String {
            parts == 1 ? backend.rawValue : "\(backend.rawValue), split in \(parts)"
        }

        /// Every backend here, whole and split (OpenCL split where its driver can).
        static var all: [Setup] {
            TestBackend.available.flatMap { backend in
                let splits =
                    backend == .cpu
                    || (TestBackend.openCLEntries.first?.info.maxSubDevices ?? 0) >= 2
                return [Setup(backend: backend, parts: 1)]
                    + (splits ? [Setup(backend: backend, parts: 2)] : [])
            }
        }

        func devices() throws -> [Device] {
            guard parts > 1 else { return [try backend.device()] }
            return try BackendSelection(environment: [
                "SIGPROP_BACKEND": backend.rawValue, "SIGPROP_SPLIT": String(parts),
            ]).makeDevices().devices
        }

        var environment: [String: String] {
            ["SIGPROP_BACKEND": backend.rawValue, "SIGPROP_SPLIT": String(parts)]
        }
    }

    /// A learning rate that makes the loss NaN at the second batch, while later batches are
    /// still in flight on the stage streams: the error reaches the caller only once all of
    /// them are done (each stage's last event has completed), so no operation still runs on
    /// storage the caller lets go of, or in a process that exits on the error.
    @Test(arguments: Setup.all)
    func anErrorMidEpochWaitsForTheBatchesInFlight(_ setup: Setup) throws {
        let devices = try setup.devices()
        var config = ModelConfig()
        config.inputShape = [1, 6, 6]
        config.classes = 4
        config.width = 256
        var options = TrainingOptions()
        options.batchSize = 32
        options.optimizer.learningRate = 1e30
        let network = try Network(
            config: config, devices: devices, optimizer: options.optimizer, seed: 3)
        let trainer = try Trainer(
            network: network, options: options,
            train: try TrainingTests.syntheticData(count: 512, seed: 1),
            test: try TrainingTests.syntheticData(count: 64, seed: 2),
            schedule: Schedule(.pipelined, depth: 6))
        let trace = Trace(rowNames: (0..<network.stageCount).map(network.stageName))
        trainer.trace = trace
        #expect { _ = try trainer.runEpoch(0) } throws: { error in
            "\(error)".contains("training stopped") && "\(error)".contains("Lower --lr")
        }
        let ends = trace.pending.map(\.end)
        #expect(ends.count > 2 * network.stageCount, "batches after the failing one were enqueued")
        let running = ends.filter { !$0.isComplete }.count
        #expect(running == 0, "\(running) of \(ends.count) stage spans still running")
        // The trainer stays usable: the next epoch starts from settled streams and fails the
        // same way (the weights are NaN now).
        #expect { _ = try trainer.runEpoch(1) } throws: { "\($0)".contains("training stopped") }
    }

    /// The `train` executable with a learning rate that blows up, again and again: every run
    /// ends with the message and exit status 1, none by a signal (a crash in OpenBLAS or a
    /// driver while the process exits under work still in flight).
    @Test(arguments: Setup.all)
    func hugeLearningRateExitsCleanlyEveryTime(_ setup: Setup) throws {
        let (data, checkpoints) = try ProcessTests.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        for run in 1...5 {
            let result = try Self.train(
                [
                    "--epochs", "2", "--lr", "1e30", "--width", "256", "--batch-size", "64",
                    "--data-dir", data.path, "--checkpoint-dir", checkpoints.path,
                ], environment: setup.environment)
            let ending = result.reason == .exit ? "exit status" : "signal"
            #expect(
                result.reason == .exit && result.status == 1,
                "run \(run): \(ending) \(result.status)\n\(result.errors)")
            #expect(result.errors.contains("training stopped"), "run \(run): \(result.errors)")
            #expect(!Self.crashed(result.errors), "run \(run): \(result.errors)")
        }
    }

    /// A run's exit and its standard error.
    static func train(_ arguments: [String], environment: [String: String]) throws -> (
        reason: Process.TerminationReason, status: Int32, errors: String
    ) {
        let errors = Pipe()
        let process = try ProcessTests.launch(arguments, errors: errors, environment: environment)
        let text = String(
            decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationReason, process.terminationStatus, text)
    }

    /// What the Swift runtime prints when the process traps or takes a signal.
    static func crashed(_ errors: String) -> Bool {
        ["Fatal error", "Program crashed", "Backtracing"].contains { errors.contains($0) }
    }
}
