import Foundation
import Testing

@testable import SigProp

/// The data set readers under libFuzzer (Fuzz/run), and the gzip output limit that keeps a
/// "zip bomb" from exhausting memory.
@Suite struct FuzzTests {
    /// The package root, three levels above this file (Tests/SigPropTests/FuzzTests.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `Fuzz/run 20`: 20 seconds of libFuzzer + AddressSanitizer over the IDX, gzip and CIFAR-10
    /// readers; any crash, out-of-bounds access, leak or wrong result fails. Where swiftc or
    /// its libFuzzer runtime is missing the script exits 77 and the test is skipped, unless
    /// SIGPROP_REQUIRE_FUZZ is set, which turns that into a failure.
    @Test(.timeLimit(.minutes(10))) func dataReadersSurviveFuzzing() throws {
        let script = Self.packageRoot.appendingPathComponent("Fuzz/run")
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-fuzz-\(UUID().uuidString).log")
        try #require(
            FileManager.default.createFile(atPath: log.path, contents: nil),
            "cannot create \(log.path)")
        defer { try? FileManager.default.removeItem(at: log) }
        let output = try FileHandle(forWritingTo: log)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["bash", script.path, "20"]
        process.currentDirectoryURL = Self.packageRoot
        process.standardOutput = output
        process.standardError = output
        try process.run()
        process.waitUntilExit()
        try output.close()

        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let tail = lines.suffix(40).joined(separator: "\n")
        let status = process.terminationStatus

        if process.terminationReason == .exit && status == 77 {
            let reason =
                lines.last(where: { $0.contains("cannot fuzz") }).map(String.init)
                ?? "Fuzz/run cannot fuzz here"
            let required = !(ProcessInfo.processInfo.environment["SIGPROP_REQUIRE_FUZZ"] ?? "")
                .isEmpty
            if required {
                Issue.record("SIGPROP_REQUIRE_FUZZ is set but the fuzzer cannot run: \(reason)")
                return
            }
            print("FuzzTests: skipped: \(reason) (set SIGPROP_REQUIRE_FUZZ to make this a failure)")
            #if compiler(>=6.3)
                try Test.cancel("skipped: \(reason)")
            #else
                return
            #endif
        }
        #expect(
            process.terminationReason == .exit && status == 0,
            "Fuzz/run 20 exited with status \(status); the last lines of its output:\n\(tail)")
        if let summary = lines.last(where: { $0.hasPrefix("Fuzz/run: OK") }) {
            print("FuzzTests: \(summary)")
        }
    }

    /// Output over the limit is refused with the file and the limit named; output of exactly
    /// the limit passes; the limit counts every gzip member together.
    @Test func gzipOutputIsLimited() throws {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let packed = try Gzip.compress(data)
        #expect(try Gzip.decompress(packed, path: "bomb.gz", limit: data.count) == data)
        #expect(try DataFile.decode(packed, path: "bomb.gz") == data)
        for (input, limit) in [
            (packed, data.count - 1), (packed + packed, data.count + 10), (packed, 0),
        ] {
            do {
                _ = try Gzip.decompress(input, path: "bomb.gz", limit: limit)
                Issue.record("\(input.count) bytes of gzip passed a limit of \(limit)")
            } catch let error as SigPropError {
                let message = error.description
                for part in ["data set bomb.gz", "unpacks to more than", "(\(limit) bytes)"] {
                    #expect(message.contains(part), "\"\(part)\" is not in: \(message)")
                }
            }
        }
        #expect(
            Gzip.outputLimit >= 600_000_000, "the limit must admit the largest MNIST-format sets")
    }
}
