import Foundation
import Testing

@testable import SigProp

/// `train --distributed` under Open MPI's `mpirun`, as a user on one machine runs it (ranks
/// oversubscribe the cores): the pipeline over ranks trains the weights of one process, data
/// parallelism those of one process with the whole batch up to rounding, checkpoints cross
/// rank counts, and a failing or killed rank stops every rank. Part of the serialized process
/// suite: at most one training run at a time.
extension ProcessTests {
    /// Runs `mpirun -np ranks train arguments` (or, for several programs, `mpirun -np 1 train
    /// a : -np 1 train b`) to its end: the status and rank 0's output (stdout and stderr).
    static func mpirun(
        _ ranks: Int, _ arguments: [String], perRank: [[String]]? = nil
    ) throws -> (status: Int32, output: String) {
        let process = try launchMPI(ranks, arguments, perRank: perRank)
        let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func launchMPI(
        _ ranks: Int, _ arguments: [String], perRank: [[String]]? = nil
    ) throws -> Process {
        let train = try trainBinary().path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/mpirun")
        // Root in containers and CI; more ranks than cores on small machines.
        var command = ["--allow-run-as-root", "--oversubscribe"]
        if let perRank {
            command += perRank.enumerated().flatMap { index, extra in
                (index > 0 ? [":"] : []) + ["-np", "1", train] + arguments + extra
            }
        } else {
            command += ["-np", String(ranks), train] + arguments
        }
        process.arguments = command
        var environment = ProcessInfo.processInfo.environment
        environment["SIGPROP_BACKEND"] = "cpu"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        return process
    }

    /// A small run's flags: batches of 16 of the 512 training images, 64 of them held out;
    /// by default the `mlp` with three blocks of 16 (and the output layer).
    static func distributedRun(
        _ data: URL, _ folder: URL, epochs: Int = 2, model: [String] = ["--width", "16"]
    ) -> [String] {
        [
            "--epochs", String(epochs), "--batch-size", "16", "--data-dir", data.path,
            "--checkpoint-dir", folder.path, "--validation", "64",
        ] + model
    }

    static func checkpointBytes(_ folder: URL) throws -> Data {
        try Data(contentsOf: folder.appendingPathComponent("last.safetensors"))
    }

    /// The pipeline over 2 and 3 ranks trains bit for bit the network of one process, over two
    /// epochs (the ranks share their stages' state after each), under Signal Propagation and
    /// under PEPITA, whose second pass goes from the last rank back to the first.
    @Test(arguments: ["sigprop", "pepita"])
    func pipelineOverRanksTrainsTheWeightsOfOneProcess(ruleName: String) throws {
        let model =
            ruleName == "pepita"
            ? ["--rule", "pepita", "--model", "dense16,dense16"] : ["--width", "16"]
        let (data, checkpoints) = try Self.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let flags = Self.distributedRun(data, checkpoints, model: model)
        let one = try Self.run(flags)
        #expect(one.status == 0, "\(one.output)")
        let expected = try Self.checkpointBytes(checkpoints)
        for ranks in [2, 3] {
            let folder = root.appendingPathComponent("ranks\(ranks)")
            let trace = root.appendingPathComponent("trace\(ranks).json")
            let run = try Self.mpirun(
                ranks,
                Self.distributedRun(data, folder, model: model) + [
                    "--distributed", "pipeline", "--trace", trace.path,
                ])
            #expect(run.status == 0, "\(run.output)")
            #expect(
                run.output.contains("distributed: pipeline over \(ranks) ranks")
                    && run.output.contains("rank \(ranks - 1): "), "\(run.output)")
            // Rank 0 alone prints: one report per epoch.
            #expect(
                run.output.components(separatedBy: "other readouts").count == 3, "\(run.output)")
            #expect(try Self.checkpointBytes(folder) == expected, "\(ranks) ranks")
            // One trace: a process per rank, each with the spans of its own stages.
            let events =
                try #require(
                    try JSONSerialization.jsonObject(with: Data(contentsOf: trace))
                        as? [String: Any]
                )["traceEvents"] as? [[String: Any]]
            let processes = Set(
                (events ?? []).filter { $0["name"] as? String == "process_name" }.compactMap {
                    ($0["args"] as? [String: Any])?["name"] as? String
                })
            #expect(processes == Set((0..<ranks).map { "rank \($0)" }), "\(processes)")
            let spanProcesses = Set(
                (events ?? []).filter { $0["ph"] as? String == "X" }.compactMap {
                    $0["pid"] as? Int
                })
            #expect(spanProcesses == Set(1...ranks), "\(spanProcesses)")
        }
    }

    /// Data parallelism over 3 ranks (shares of 5, 5 and 6 samples of each batch of 16) trains
    /// the weights of one process with the whole batch up to float rounding: every rank's loss
    /// compares its rows with the whole batch, and the gradients, weighted by the shares, are
    /// summed before each step. SGD keeps rounding at its size (Adam's m/√v would turn a
    /// rounding difference in a gradient near zero into a step of up to the learning rate).
    @Test func dataParallelismTrainsTheWholeBatchUpToRounding() throws {
        let (data, checkpoints) = try Self.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let sgd = ["--optimizer", "sgd", "--lr", "0.01"]
        let one = try Self.run(Self.distributedRun(data, checkpoints) + sgd)
        #expect(one.status == 0, "\(one.output)")
        let folder = root.appendingPathComponent("replicas")
        let run = try Self.mpirun(
            3, Self.distributedRun(data, folder) + sgd + ["--distributed", "data"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("data parallel over 3 ranks"), "\(run.output)")
        let expected = try Checkpoint(
            contentsOf: checkpoints.appendingPathComponent(
                "last.safetensors"))
        let replicated = try Checkpoint(
            contentsOf: folder.appendingPathComponent(
                "last.safetensors"))
        var worst = 0.0
        for (name, tensor) in expected.tensors where !name.hasSuffix(".momentum") {
            let values = tensor.values
            let other = try #require(replicated.tensors[name]?.values, "\(name)")
            let scale = Double(values.map { abs($0) }.max() ?? 0)
            let difference = zip(values, other).map { Double(abs($0 - $1)) }.max() ?? 0
            worst = max(worst, difference / max(scale, 1e-6))
        }
        #expect(worst > 0, "identical: the shares are not exercised")
        #expect(worst < 1e-4, "largest difference \(worst) of a tensor's scale")
    }

    /// A checkpoint written by ranks resumes in one process and under another rank count, and
    /// the result is the uninterrupted one-process run's.
    @Test func checkpointsResumeUnderAnotherRankCount() throws {
        let (data, checkpoints) = try Self.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let two = try Self.run(Self.distributedRun(data, checkpoints, epochs: 3))
        #expect(two.status == 0, "\(two.output)")
        let expected = try Self.checkpointBytes(checkpoints)
        let folder = root.appendingPathComponent("resumed")
        let last = folder.appendingPathComponent("last.safetensors").path
        let first = try Self.mpirun(
            2, Self.distributedRun(data, folder, epochs: 1) + ["--distributed", "pipeline"])
        #expect(first.status == 0, "\(first.output)")
        let second = try Self.run([
            "--epochs", "2", "--checkpoint-dir", folder.path, "--resume", last,
        ])
        #expect(second.status == 0, "\(second.output)")
        let third = try Self.mpirun(
            3,
            [
                "--epochs", "3", "--checkpoint-dir", folder.path, "--resume", last,
                "--distributed", "pipeline",
            ])
        #expect(third.status == 0, "\(third.output)")
        #expect(try Self.checkpointBytes(folder) == expected)
    }

    /// A rank that fails (here: its data folder does not exist) stops every rank with its
    /// error, naming it; a rank killed in the middle of training stops the others, mpirun names
    /// it, and the last checkpoint stays whole.
    @Test func aFailingOrKilledRankStopsEveryRank() throws {
        let (data, checkpoints) = try Self.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        let missing = root.appendingPathComponent("missing").path
        let failed = try Self.mpirun(
            2, Self.distributedRun(data, checkpoints) + ["--distributed", "pipeline"],
            perRank: [[], ["--data-dir", missing]])
        #expect(failed.status != 0)
        #expect(failed.output.contains("error: rank 1: "), "\(failed.output)")
        #expect(failed.output.contains(missing), "\(failed.output)")

        let process = try Self.launchMPI(
            2,
            Self.distributedRun(data, checkpoints, epochs: 100_000) + [
                "--distributed", "pipeline", "--overwrite",
            ])
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: checkpoint.path), Date() < deadline,
            process.isRunning
        {
            usleep(20_000)
        }
        let rank1 = try #require(Self.rankProcess(1, of: process.processIdentifier))
        kill(rank1, SIGKILL)
        // The output is a few lines (no terminal: no progress bar), far from filling the pipe.
        let text = String(
            decoding: (process.standardOutput as! Pipe).fileHandleForReading
                .readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(text.contains("rank 1") && text.contains("signal 9"), "\(text)")
        #expect(try Checkpoint(contentsOf: checkpoint).epochs >= 1)
    }

    /// The process of rank `rank` among `launcher`'s children (Open MPI writes each rank's
    /// number into its environment).
    static func rankProcess(_ rank: Int, of launcher: Int32) -> Int32? {
        let children =
            (try? String(
                contentsOfFile: "/proc/\(launcher)/task/\(launcher)/children", encoding: .utf8))?
            .split(separator: " ").compactMap { Int32($0) } ?? []
        return children.first { pid in
            guard
                let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
            else { return false }
            return environment.split(separator: 0).contains {
                String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)"
            }
        }
    }

    /// What the ranks cannot train is refused before any batch, with the fix (one rank, as
    /// `train --distributed` runs without mpirun).
    @Test(arguments: [
        (["--distributed", "data", "--dense-norm", "batch"], "needs the K-row shortcut"),
        (
            ["--distributed", "data", "--rule", "ff", "--model", "dense16"],
            "--distributed pipeline"
        ),
        (["--distributed", "pipeline", "--model", "lif16"], "leave --distributed out"),
    ])
    func whatTheRanksCannotTrainIsRefused(flags: [String], fix: String) throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let run = try Self.run(Self.distributedRun(data, checkpoints, model: []) + flags)
        #expect(run.status != 0)
        #expect(run.output.contains(fix), "\(run.output)")
        #expect(!run.output.contains("epoch 1/"), "\(run.output)")
    }

    /// A pipeline over more ranks than the network has stages is refused, naming the most.
    @Test func morePipelineRanksThanStagesAreRefused() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let run = try Self.mpirun(
            4,
            Self.distributedRun(data, checkpoints, model: ["--model", "dense16,dense16"])
                + ["--distributed", "pipeline"])
        #expect(run.status != 0)
        #expect(run.output.contains("run at most 3 ranks"), "\(run.output)")
        #expect(!run.output.contains("epoch 1/"), "\(run.output)")
    }
}

extension ProcessTests {
    /// A process bound to one core (`taskset`, as `mpirun` binds its ranks) runs the CPU
    /// fallback on one core, and trains the weights of an unbound run, bit for bit.
    @Test func boundToOneCoreTrainsTheWeightsOfTheWholeMachine() throws {
        try #require(
            ProcessInfo.processInfo.activeProcessorCount >= 2, "needs a machine of 2 cores or more")
        let (data, checkpoints) = try Self.workspace()
        let root = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: root) }
        // Products of this width split over the cores.
        let wide = ["--width", "256"]
        let whole = try Self.run(Self.distributedRun(data, checkpoints, epochs: 1, model: wide))
        #expect(whole.status == 0, "\(whole.output)")
        let bound = root.appendingPathComponent("bound")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        process.arguments =
            ["-c", "0", try Self.trainBinary().path]
            + Self.distributedRun(data, bound, epochs: 1, model: wide)
        process.environment = ProcessInfo.processInfo.environment.merging([
            "SIGPROP_BACKEND": "cpu"
        ]) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(
            decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(
            output.contains("1 of \(ProcessInfo.processInfo.activeProcessorCount) cores"),
            "\(output)")
        #expect(try Self.checkpointBytes(bound) == Self.checkpointBytes(checkpoints))
    }
}
