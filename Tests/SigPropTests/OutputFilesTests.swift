import Foundation
import Testing

@testable import SigProp

/// The files a run writes are checked before any work, with the cause in plain words.
@Suite struct OutputFilesTests {
    static func withFolder<T>(_ body: (URL) throws -> T) throws -> T {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-outputs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        return try body(folder)
    }

    static func message(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func checkpointFolderIsCreatedOrRefusedWithTheCause() throws {
        try Self.withFolder { root in
            let nested = root.appendingPathComponent("a/b/c").path
            #expect(
                Self.message { try OutputFiles.prepareFolder(nested, flag: "--checkpoint-dir") }
                    == nil)
            var isFolder: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: nested, isDirectory: &isFolder))
            #expect(isFolder.boolValue)
            #expect(try FileManager.default.contentsOfDirectory(atPath: nested).isEmpty)

            let file = root.appendingPathComponent("file").path
            FileManager.default.createFile(atPath: file, contents: Data())
            let cases: [(String, String)] = [
                (file, "it is a file, not a folder"),
                (file + "/sub", "\(file) is a file, not a folder"),
                ("/proc/sigprop-checkpoints", "kernel interface"),
            ]
            for (path, cause) in cases {
                let message = try #require(
                    Self.message { try OutputFiles.prepareFolder(path, flag: "--checkpoint-dir") })
                #expect(message.hasPrefix("--checkpoint-dir \(path): "), "\(message)")
                #expect(message.contains(cause), "\(message)")
            }
        }
    }

    @Test func filesAreRefusedWithTheCause() throws {
        try Self.withFolder { root in
            let fresh = root.appendingPathComponent("metrics.jsonl").path
            #expect(
                Self.message { try OutputFiles.checkAppendable(fresh, flag: "--metrics") } == nil)
            #expect(
                Self.message { try OutputFiles.checkReplaceable(fresh, flag: "--trace") } == nil)
            #expect(!FileManager.default.fileExists(atPath: fresh), "a check leaves no file")
            #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).isEmpty)
            // Appending to a device is fine; replacing one (or a pipe) is not.
            #expect(
                Self.message { try OutputFiles.checkAppendable("/dev/null", flag: "--metrics") }
                    == nil)

            let pipe = root.appendingPathComponent("pipe").path
            mkfifo(pipe, 0o600)
            let missing = root.appendingPathComponent("missing/m.jsonl").path
            let cases: [(String, Bool, String)] = [
                (root.path, false, "it is a folder, not a file"),
                (root.path, true, "it is a folder, not a file"),
                (missing, false, "the folder \(root.path)/missing does not exist"),
                ("/proc/version", false, "kernel interface"),
                ("/proc/sigprop.json", true, "kernel interface"),
                (pipe, true, "not a regular file"),
            ]
            for (path, replaced, cause) in cases {
                let flag = replaced ? "--trace" : "--metrics"
                let message = try #require(
                    Self.message {
                        replaced
                            ? try OutputFiles.checkReplaceable(path, flag: flag)
                            : try OutputFiles.checkAppendable(path, flag: flag)
                    }, "\(path)")
                #expect(message.hasPrefix("\(flag) \(path): cannot "), "\(message)")
                #expect(message.contains(cause), "\(message)")
                #expect(message.hasSuffix("Give \(flag) a path you can write to"), "\(message)")
            }
        }
    }

    @Test(.enabled(if: getuid() != 0, "root writes into read-only folders"))
    func readOnlyFolderIsRefused() throws {
        try Self.withFolder { root in
            chmod(root.path, 0o555)
            defer { chmod(root.path, 0o755) }
            let message = try #require(
                Self.message {
                    try OutputFiles.checkAppendable(
                        root.appendingPathComponent("m.jsonl").path, flag: "--metrics")
                })
            #expect(message.contains("permission denied"), "\(message)")
        }
    }

    @Test func appendReportsAFullDisk() throws {
        #expect(throws: FileSystemError(path: "/dev/full", code: ENOSPC)) {
            try OutputFiles.append(Data("x\n".utf8), to: "/dev/full")
        }
        try Self.withFolder { root in
            let path = root.appendingPathComponent("m.jsonl").path
            try OutputFiles.append(Data("a\n".utf8), to: path)
            try OutputFiles.append(Data("b\n".utf8), to: path)
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "a\nb\n")
        }
    }

    @Test func existingCheckpointsAreFound() throws {
        try Self.withFolder { root in
            #expect(OutputFiles.existingCheckpoints(in: root.path).isEmpty)
            #expect(OutputFiles.existingCheckpoints(in: root.path + "/absent").isEmpty)
            let best = root.appendingPathComponent("best.safetensors").path
            FileManager.default.createFile(atPath: best, contents: Data())
            #expect(OutputFiles.existingCheckpoints(in: root.path) == [best])
        }
    }
}
