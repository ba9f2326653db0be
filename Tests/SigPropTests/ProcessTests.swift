import Foundation
import Testing

@testable import SigProp

/// The `train` executable as a user runs it: killed at any moment, or stopped with Ctrl-C.
@Suite(.serialized) struct ProcessTests {
    /// `swift test` builds the executables next to the test bundle.
    static func trainBinary() throws -> URL {
        let url = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent(
            "train")
        try #require(
            FileManager.default.isExecutableFile(atPath: url.path), "no train binary at \(url.path)"
        )
        return url
    }

    /// A folder with a small MNIST-format data set (10 classes of 8x8 images) and a
    /// checkpoint folder.
    static func workspace() throws -> (data: URL, checkpoints: URL) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-process-\(UUID().uuidString)")
        let data = root.appendingPathComponent("data")
        let checkpoints = root.appendingPathComponent("checkpoints")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        var generator = SeededGenerator(seed: 11)
        for (prefix, count) in [("train", 512), ("t10k", 64)] {
            let labels = (0..<count).map { UInt8($0 % 10) }
            let pixels = (0..<(count * 64)).map { _ in UInt8.random(in: 0...255, using: &generator)
            }
            try Data(idxImages(pixels, count: count, rows: 8, columns: 8)).write(
                to: data.appendingPathComponent("\(prefix)-images-idx3-ubyte"))
            try Data(idxLabels(labels)).write(
                to: data.appendingPathComponent("\(prefix)-labels-idx1-ubyte"))
        }
        return (data, checkpoints)
    }

    static func launch(
        _ arguments: [String], output: Pipe? = nil, errors: Pipe? = nil,
        environment extra: [String: String] = [:],
        removing unset: [String] = []
    ) throws -> Process {
        let process = Process()
        process.executableURL = try trainBinary()
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SIGPROP_BACKEND"] = "cpu"
        environment.merge(extra) { $1 }
        for name in unset { environment[name] = nil }
        process.environment = environment
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = errors ?? FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Reads `pipe` until a line starts with `prefix` (the run has reached that point).
    static func waitForLine(startingWith prefix: String, in pipe: Pipe) -> Bool {
        var text = ""
        while true {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { return false }
            text += String(decoding: chunk, as: UTF8.self)
            if text.split(separator: "\n").contains(where: { $0.hasPrefix(prefix) }) { return true }
        }
    }

    /// SIGKILL at random moments of a run that writes a checkpoint every few milliseconds:
    /// the checkpoint on disk is always a whole one (old or new), never a torn write.
    @Test func killedAnyTimeTheCheckpointStaysLoadable() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        var generator = SeededGenerator(seed: 12)
        for run in 0..<12 {
            let process = try Self.launch([
                "--epochs", "100000", "--width", "256", "--batch-size", "64", "--data-dir",
                data.path,
                "--checkpoint-dir", checkpoints.path, "--overwrite",
            ])
            // Once the first checkpoint exists, kill at a random moment of the writes that follow.
            if run == 0 {
                let deadline = Date().addingTimeInterval(60)
                while !FileManager.default.fileExists(atPath: checkpoint.path) && Date() < deadline
                    && process.isRunning
                { usleep(10_000) }
            }
            usleep(UInt32.random(in: 20_000...400_000, using: &generator))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
            let restored = try Checkpoint(contentsOf: checkpoint)
            #expect(try restored.epochs >= 1)
        }
    }

    /// Ctrl-C: the run finishes its batch, writes a checkpoint and exits with status 130;
    /// --resume continues from it.
    @Test func ctrlCWritesACheckpointAndResumes() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let arguments = [
            "--epochs", "100000", "--width", "64", "--batch-size", "16", "--data-dir", data.path,
            "--checkpoint-dir", checkpoints.path,
        ]
        let output = Pipe()
        let process = try Self.launch(arguments, output: output)
        // Interrupt once training runs (the "model:" line comes just before the first batch).
        #expect(Self.waitForLine(startingWith: "model:", in: output))
        // A full pipe would block the run.
        output.fileHandleForReading.readabilityHandler = { _ = $0.availableData }
        usleep(300_000)
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        #expect(process.terminationStatus == 130)
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        let restored = try Checkpoint(contentsOf: checkpoint)
        let position = try restored.epochs * 32 + restored.batchesDone
        #expect(position > 0)
        let resumed = try Self.launch(
            arguments.dropFirst(2) + [
                "--epochs", String(try restored.epochs + 2), "--resume", checkpoint.path,
            ])
        resumed.waitUntilExit()
        #expect(resumed.terminationStatus == 0)
        #expect(try Checkpoint(contentsOf: checkpoint).epochs == restored.epochs + 2)
    }

    /// No OpenCL driver (an ICD loader pointed at an empty folder): `auto` trains on the CPU;
    /// `opencl` stops before any work with the fix. (An OpenCL error under `auto` is a warning
    /// and the CPU: BackendSelectionTests.)
    @Test func missingOpenCLDriverMeansCPUUnderAutoAndAnErrorUnderOpenCL() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let noDrivers = data.deletingLastPathComponent().appendingPathComponent("no-icd")
        try FileManager.default.createDirectory(at: noDrivers, withIntermediateDirectories: true)
        let arguments = [
            "--epochs", "1", "--width", "16", "--limit", "64", "--batch-size", "16", "--data-dir",
            data.path, "--checkpoint-dir", checkpoints.path, "--overwrite",
        ]
        var results: [String: (status: Int32, output: String)] = [:]
        for backend in ["auto", "opencl"] {
            let output = Pipe()
            let errors = Pipe()
            let process = try Self.launch(
                arguments, output: output, errors: errors,
                environment: [
                    "SIGPROP_BACKEND": backend, "OCL_ICD_VENDORS": noDrivers.path,
                    "OPENCL_VENDOR_PATH": noDrivers.path,
                ])
            let text = String(
                decoding: output.fileHandleForReading.readDataToEndOfFile()
                    + errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            results[backend] = (process.terminationStatus, text)
        }
        let auto = try #require(results["auto"])
        let opencl = try #require(results["opencl"])
        #expect(auto.status == 0, "\(auto.output)")
        #expect(auto.output.contains("backend: cpu"), "\(auto.output)")
        #expect(opencl.status != 0)
        #expect(
            opencl.output.contains("no OpenCL device was found")
                && opencl.output.contains("pocl-opencl-icd"), "\(opencl.output)")
        #expect(!opencl.output.contains("model:"), "no work may start: \(opencl.output)")
    }

    /// Left to choose, OpenBLAS may pick narrower kernels than the CPU runs (0.3.21 on CPUs it
    /// does not know); `train` then restarts itself with `OPENBLAS_CORETYPE` set. Whatever
    /// OpenBLAS picks on this machine, the training runs on the widest kernels the CPU allows.
    @Test func trainRunsOpenBLASsWidestKernelsForThisCPU() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let output = Pipe()
        let errors = Pipe()
        let process = try Self.launch(
            [
                "--epochs", "1", "--width", "16", "--limit", "64", "--batch-size", "16",
                "--data-dir", data.path,
                "--checkpoint-dir", checkpoints.path,
            ],
            output: output, errors: errors, removing: [OpenBLASKernels.variable])
        let text = String(
            decoding: output.fileHandleForReading.readDataToEndOfFile()
                + errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        let backend = try #require(
            text.split(separator: "\n").first { $0.hasPrefix("backend: cpu") }, "\(text)")
        let core = try #require(backend.firstMatch(of: /OpenBLAS (\S+) kernels/)?.1, "\(backend)")
        #expect(OpenBLASKernels.fasterCoreForThisCPU(than: String(core)) == nil, "\(text)")
        if text.contains("restarting with \(OpenBLASKernels.variable)=") {
            #expect(
                text.contains("restarting with \(OpenBLASKernels.variable)=\(core) "), "\(text)")
        }
    }

    /// A learning rate that blows the weights up: the run stops at the first non-finite loss
    /// naming the block and batch, exits non-zero, and leaves the last good checkpoint as it was.
    @Test func nonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let common = [
            "--width", "32", "--batch-size", "16", "--data-dir", data.path, "--checkpoint-dir",
            checkpoints.path,
        ]
        let good = try Self.launch(["--epochs", "1"] + common)
        good.waitUntilExit()
        #expect(good.terminationStatus == 0)
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        let before = try Data(contentsOf: checkpoint)

        let errors = Pipe()
        let exploding = try Self.launch(
            ["--epochs", "3", "--lr", "1e30", "--overwrite"] + common, errors: errors)
        let text = String(
            decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        exploding.waitUntilExit()
        #expect(exploding.terminationStatus != 0)
        #expect(text.contains("training stopped") && text.contains("batch"), "\(text)")
        #expect(
            try Data(contentsOf: checkpoint) == before, "the last good checkpoint was overwritten")
    }

    /// The soak's memory half, in a process of its own (the test process's resident set is
    /// shared with tests running in parallel): 20 epochs of 32 batches, pipelined, trace off.
    /// Device bytes are the same after every epoch; the resident set does not grow after the
    /// first epochs (8 MiB over 18 epochs: a leak of 14 KB per batch would show).
    @Test(arguments: TestBackend.available)
    func twentyEpochsInAProcessKeepMemoryFlat(_ backend: TestBackend) throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let metrics = checkpoints.deletingLastPathComponent().appendingPathComponent(
            "metrics.jsonl")
        let run = try Self.launch(
            [
                "--epochs", "20", "--width", "64", "--batch-size", "16", "--data-dir", data.path,
                "--checkpoint-dir", checkpoints.path, "--metrics", metrics.path,
            ],
            environment: ["SIGPROP_BACKEND": backend.rawValue])
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        let epochs = try String(contentsOf: metrics, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8))
        }
        try #require(epochs.count == 20)
        let device = epochs.map(\.deviceBytes)
        let resident = epochs.map(\.residentBytes)
        #expect(device[0] > 0 && Set(device).count == 1, "device bytes per epoch: \(device)")
        #expect(resident[19] - resident[1] < 8 << 20, "resident bytes per epoch: \(resident)")
    }
}
