import Foundation
import Testing

@testable import SigProp

/// The example target (`Sources/sigprop-example`) is the public API as a researcher's package
/// uses it: it must build and train on every backend. Part of the serialized process suite.
extension ProcessTests {
    @Test(arguments: TestBackend.available)
    func theExampleTrainsACustomNetwork(_ backend: TestBackend) throws {
        let url = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent(
            "sigprop-example")
        try #require(FileManager.default.isExecutableFile(atPath: url.path), "no \(url.path)")
        let process = Process()
        process.executableURL = url
        var environment = ProcessInfo.processInfo.environment
        environment["SIGPROP_BACKEND"] = backend.rawValue
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(
            decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(output.contains("same layers true"), "\(output)")
        #expect(output.contains("epoch 2:") && output.contains("restored on"), "\(output)")
    }
}
