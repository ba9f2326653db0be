import Foundation
import Testing

@testable import SigProp

/// `train` as a careless or hostile user drives it: outputs that cannot be written, earlier
/// runs' checkpoints, resumes with other settings, SIGTERM, values that cannot work. Part of
/// the serialized process suite, so at most one training process runs at a time.
extension ProcessTests {
    /// Runs `train` to its end: its exit status and its output (stdout and stderr together).
    static func run(
        _ arguments: [String], environment: [String: String] = [:]
    ) throws -> (status: Int32, output: String) {
        let pipe = Pipe()
        let process = try launch(arguments, output: pipe, errors: pipe, environment: environment)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func quick(_ data: URL, _ checkpoints: URL, epochs: Int = 1) -> [String] {
        [
            "--epochs", String(epochs), "--width", "16", "--batch-size", "16", "--data-dir",
            data.path, "--checkpoint-dir", checkpoints.path,
        ]
    }

    /// Outputs that cannot be written stop the run before the data is loaded, naming the flag,
    /// the path and the cause.
    @Test(arguments: [
        (["--checkpoint-dir", "/proc/sigprop"], "--checkpoint-dir /proc/sigprop: ", "kernel"),
        (["--metrics", "/proc/version"], "--metrics /proc/version: ", "kernel"),
        (["--metrics", "FOLDER"], "--metrics FOLDER: ", "it is a folder, not a file"),
        (["--metrics", "FOLDER/missing/m.jsonl"], "--metrics FOLDER/missing", "does not exist"),
        // A pipe, not a device: were the check to fail, the run would replace the path.
        (["--trace", "FOLDER/pipe"], "--trace FOLDER/pipe: ", "not a regular file"),
    ])
    func unwritableOutputsStopTheRunBeforeAnyWork(
        flags: [String], start: String, cause: String
    ) throws {
        let (data, checkpoints) = try Self.workspace()
        let folder = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: folder) }
        mkfifo(folder.appendingPathComponent("pipe").path, 0o600)
        let given = flags.map { $0.replacingOccurrences(of: "FOLDER", with: folder.path) }
        let (status, output) = try Self.run(Self.quick(data, checkpoints) + given)
        #expect(status == 1, "\(output)")
        let expected = start.replacingOccurrences(of: "FOLDER", with: folder.path)
        #expect(output.contains("error: " + expected) && output.contains(cause), "\(output)")
        #expect(!output.contains("data:"), "the data was loaded first: \(output)")
    }

    /// A disk that fills up during the run (/dev/full): the checkpoint is written first, then
    /// the error names the file and the cause; no Foundation error dump.
    @Test func aFullDiskKeepsTheCheckpointAndNamesTheFile() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(
            Self.quick(data, checkpoints, epochs: 2) + ["--metrics", "/dev/full"])
        #expect(status == 1, "\(output)")
        #expect(
            output.contains("error: --metrics /dev/full: cannot write the metrics of epoch 1: ")
                && output.contains("the disk is full")
                && output.contains("The checkpoint of epoch 1 is written"), "\(output)")
        #expect(!output.contains("NSCocoaErrorDomain"), "\(output)")
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        #expect(try Checkpoint(contentsOf: checkpoint).epochs == 1)
    }

    /// A new run in a folder that holds a checkpoint (`last` or `best`) is refused before any
    /// work, with the fixes; `--overwrite` replaces it.
    @Test func aNewRunDoesNotReplaceAnEarlierCheckpoint() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let arguments = Self.quick(data, checkpoints)
        #expect(try Self.run(arguments).status == 0)
        let last = checkpoints.appendingPathComponent("last.safetensors")
        let before = try Data(contentsOf: last)
        let (status, output) = try Self.run(arguments)
        #expect(status == 64, "\(output)")
        for part in [last.path, "--resume \(last.path)", "another --checkpoint-dir", "--overwrite"]
        {
            #expect(output.contains(part), "\(output)")
        }
        #expect(!output.contains("data:"), "\(output)")
        #expect(try Data(contentsOf: last) == before)

        let best = checkpoints.appendingPathComponent("best.safetensors")
        try FileManager.default.moveItem(at: last, to: best)
        let refused = try Self.run(arguments)
        #expect(refused.status == 64 && refused.output.contains(best.path), "\(refused.output)")
        #expect(try Self.run(arguments + ["--overwrite"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: last.path))

        // Resumed from another folder, the run would replace this folder's checkpoints too.
        let elsewhere = data.deletingLastPathComponent().appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        let copy = elsewhere.appendingPathComponent("last.safetensors")
        try FileManager.default.copyItem(at: last, to: copy)
        let resumed = try Self.run(
            ["--epochs", "2", "--checkpoint-dir", checkpoints.path, "--resume", copy.path])
        #expect(resumed.status == 64 && resumed.output.contains(last.path), "\(resumed.output)")
        let own = try Self.run(
            ["--epochs", "2", "--checkpoint-dir", elsewhere.path, "--resume", copy.path])
        #expect(own.status == 0, "\(own.output)")
    }

    /// Resuming with another --limit or --data-dir is refused naming the flag and both values;
    /// a position beyond the epoch is a damaged checkpoint; a checkpoint without the data
    /// settings (written before they were stored) still resumes.
    @Test func resumeChecksTheDataAndThePosition() throws {
        let (data, checkpoints) = try Self.workspace()
        let folder = data.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try Self.run(Self.quick(data, checkpoints) + ["--limit", "128"])
        #expect(first.status == 0, "\(first.output)")
        // A network without spiking layers has no spike figures to report.
        #expect(!first.output.contains("spikes per step"), "\(first.output)")
        let last = checkpoints.appendingPathComponent("last.safetensors")
        let resume = ["--epochs", "2", "--checkpoint-dir", checkpoints.path, "--resume", last.path]

        let limit = try Self.run(resume + ["--limit", "64"])
        #expect(limit.status == 64, "\(limit.output)")
        #expect(limit.output.contains("--limit 64 (checkpoint: 128)"), "\(limit.output)")
        let other = folder.appendingPathComponent("other")
        try FileManager.default.copyItem(at: data, to: other)
        let moved = try Self.run(resume + ["--data-dir", other.path])
        #expect(moved.status == 64, "\(moved.output)")
        #expect(
            moved.output.contains("--data-dir \(other.path) (checkpoint: \(data.path))"),
            "\(moved.output)")

        var checkpoint = try Checkpoint(contentsOf: last)
        checkpoint.metadata["batches_done"] = "8"  // 128 samples make 8 batches of 16
        let forged = checkpoints.appendingPathComponent("forged.safetensors")
        try checkpoint.serialized().write(to: forged)
        let damaged = try Self.run(resume.dropLast() + [forged.path])
        #expect(damaged.status == 1, "\(damaged.output)")
        #expect(
            damaged.output.contains("checkpoint is damaged")
                && damaged.output.contains("8 batches of epoch 2 done")
                && !damaged.output.contains("samples/s"), "\(damaged.output)")

        checkpoint.metadata["batches_done"] = "0"
        checkpoint.metadata["data"] = nil
        let old = checkpoints.appendingPathComponent("old.safetensors")
        try checkpoint.serialized().write(to: old)
        let resumed = try Self.run(
            resume.dropLast() + [old.path, "--data-dir", data.path, "--limit", "128"])
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(try Checkpoint(contentsOf: last).epochs == 2)
        #expect(try Checkpoint(contentsOf: last).data?.limit == 128)
    }

    /// SIGTERM (timeout, job schedulers, container stops) stops like Ctrl-C: the batch
    /// finishes, a checkpoint is written and said, and the status is 128 + 15.
    @Test func sigtermWritesACheckpointAndExits143() throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let output = Pipe()
        let process = try Self.launch(
            [
                "--epochs", "100000", "--width", "64", "--batch-size", "16", "--data-dir",
                data.path, "--checkpoint-dir", checkpoints.path,
            ], output: output, errors: output)
        #expect(Self.waitForLine(startingWith: "model:", in: output))
        // Little is printed after "model:" (no terminal: a progress line every 10 s), so
        // the pipe cannot fill up before the end.
        usleep(300_000)
        kill(process.processIdentifier, SIGTERM)
        // A process that never takes the signal fails the test instead of hanging it.
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            Issue.record("still running 30 s after SIGTERM")
            kill(process.processIdentifier, SIGKILL)
        }
        let seen = String(
            decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 143, "\(seen)")
        let checkpoint = checkpoints.appendingPathComponent("last.safetensors")
        #expect(seen.contains("terminated (SIGTERM) after batch"), "\(seen)")
        #expect(seen.contains("--resume \(checkpoint.path)"), "\(seen)")
        #expect(try Checkpoint(contentsOf: checkpoint).epochs >= 0)
    }

    /// Values that cannot work are usage errors, exit status 64, with the reason; negative
    /// numbers reach the check instead of reading as a missing value.
    @Test(arguments: [
        (["--lr", "-1"], "--lr must be a positive number, got -1"),
        (["--batch-size", "1"], "--batch-size must be at least 2"),
        (["--loss", "top-k:10"], "--loss top-k:10: K must be below the number of classes, 10"),
        (["--crop-padding", "8"], "--crop-padding 8 must be smaller than the images"),
        (["--loss", "bogus"], "--loss bogus is not a loss"),
        (["--dense-norm", "instance"], "--dense-norm instance is not allowed"),
        (["--momentum", "0.5"], "--momentum is SGD's, and this run's optimizer is adam"),
        (
            ["--schedule", "sequential", "--pipeline-depth", "3"],
            "--schedule sequential keeps one"
        ),
        (["--lr-gamma", "0.5"], "--lr-gamma multiplies the rate at --lr-milestones"),
        (["--readout-block", "2"], "--readout-block chooses the block of --readout similarity"),
    ])
    func valuesThatCannotWorkAreUsageErrors(flags: [String], reason: String) throws {
        let (data, checkpoints) = try Self.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let (status, output) = try Self.run(Self.quick(data, checkpoints) + flags)
        #expect(status == 64, "\(output)")
        #expect(output.contains(reason), "\(output)")
        #expect(!output.contains("model:"), "\(output)")
    }

    /// `doctor` checks every device: a device choice in the environment is said to be ignored.
    @Test func doctorSaysItIgnoresTheDeviceChoice() throws {
        let process = Process()
        process.executableURL = try Self.trainBinary().deletingLastPathComponent()
            .appendingPathComponent("doctor")
        process.arguments = ["--cpu-only"]
        var environment = ProcessInfo.processInfo.environment
        environment["SIGPROP_BACKEND"] = nil
        environment["SIGPROP_DEVICE"] = "0"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = output
        try process.run()
        // The note comes before the checks, which take seconds and are not needed here.
        var text = ""
        while !text.contains("SIGPROP_DEVICE"),
            case let chunk = output.fileHandleForReading.availableData, !chunk.isEmpty
        {
            text += String(decoding: chunk, as: UTF8.self)
        }
        let line = text.split(separator: "\n").first { $0.contains("SIGPROP_DEVICE") } ?? ""
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(line.contains("SIGPROP_DEVICE=0 is ignored: doctor checks every device"), "\(line)")
    }
}
