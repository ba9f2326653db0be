import Foundation
import Testing

@testable import SigProp

/// The backends the tests run on: the CPU fallback always, OpenCL where a device exists.
/// With SIGPROP_REQUIRE_OPENCL set, a missing OpenCL device fails `openCLIsPresentWhenRequired`
/// instead of quietly shrinking this list. SIGPROP_TEST_CPU_ONLY leaves OpenCL out, for runs
/// that are about the CPU backend alone (.ci/openblas-kernels runs the CPU backend's tests under
/// each of OpenBLAS's kernel sets; valgrind); it cannot be combined with SIGPROP_REQUIRE_OPENCL.
enum TestBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case cpu, opencl

    var testDescription: String { rawValue }

    static let cpuOnly =
        !(ProcessInfo.processInfo.environment["SIGPROP_TEST_CPU_ONLY"] ?? "").isEmpty
    static let openCLEntries: [OpenCLDeviceEntry] =
        cpuOnly ? [] : (try? OpenCLDiscovery.allDevices()) ?? []
    static let openCLRequired =
        !(ProcessInfo.processInfo.environment["SIGPROP_REQUIRE_OPENCL"] ?? "").isEmpty

    static var available: [TestBackend] { openCLEntries.isEmpty ? [.cpu] : [.cpu, .opencl] }

    private static let devices: [TestBackend: Device] = {
        var devices: [TestBackend: Device] = [:]
        devices[.cpu] = try? Device.cpu()
        if let entry = openCLEntries.first { devices[.opencl] = try? Device.opencl(entry) }
        return devices
    }()

    /// One shared device per backend, so programs are built once per test run.
    func device() throws -> Device {
        try #require(Self.devices[self], "could not open the \(rawValue) device")
    }

    /// A device of this backend of its own: tests running in parallel on the shared one move
    /// its `bytesInUse`.
    func privateDevice() throws -> Device {
        switch self {
        case .cpu: return try Device.cpu()
        case .opencl:
            return try Device.opencl(
                try #require(Self.openCLEntries.first, "no OpenCL device"))
        }
    }

    /// The first OpenCL device posing as a GPU, so the kernels and paths only GPUs take run
    /// on PoCL too; nil without OpenCL.
    static func posingAsGPU() throws -> Device? {
        guard let entry = openCLEntries.first else { return nil }
        return try Device.opencl(OpenCLDeviceEntry(info: entry.info.posing(as: .gpu), id: entry.id))
    }

    /// `backend`'s device, or for nil the OpenCL device posing as a GPU (nil without OpenCL).
    static func device(_ backend: TestBackend?) throws -> Device? {
        guard let backend else { return try posingAsGPU() }
        return try backend.device()
    }
}

@Test func openCLIsPresentWhenRequired() throws {
    if TestBackend.openCLRequired {
        #expect(
            !TestBackend.cpuOnly,
            "SIGPROP_REQUIRE_OPENCL and SIGPROP_TEST_CPU_ONLY are both set: unset one")
        #expect(
            !TestBackend.openCLEntries.isEmpty,
            "SIGPROP_REQUIRE_OPENCL is set but no OpenCL device was found (install pocl-opencl-icd)"
        )
    }
}

/// Checks shapes first, then every entry within `absolute + relative * |expected|`; names
/// the first failing index and both values.
func expectClose(
    _ actual: [Float], _ expected: [Float], absolute: Float = 1e-5, relative: Float = 1e-4,
    _ what: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    guard actual.count == expected.count else {
        Issue.record(
            "\(what): \(actual.count) values, expected \(expected.count)",
            sourceLocation: sourceLocation)
        return
    }
    for (index, (a, e)) in zip(actual, expected).enumerated()
    where !(abs(a - e) <= absolute + relative * abs(e)) {
        Issue.record(
            "\(what): index \(index) is \(a), expected \(e)", sourceLocation: sourceLocation)
        return
    }
}

/// Every comparison of a golden check within its tolerance, naming each that is not.
func expectPassed(
    _ report: GoldenReport, _ name: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    for comparison in report.comparisons where !comparison.passed {
        let message =
            "\(name) \(comparison.output): max error \(comparison.maxAbsoluteError) > "
            + "\(comparison.tolerance)"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
    #expect(!report.comparisons.isEmpty, "\(name): nothing was compared")
}

/// Runs the reference case `name` on `backend` (`GoldenCheck`, as `doctor --golden` does)
/// and expects every reference output compared (none left out by accident) and within its
/// tolerance.
func expectMatchesReference(
    _ name: String, on backend: TestBackend, sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let golden = try GoldenCase(contentsOf: try fixture(name))
    let report = try GoldenCheck.run(golden, on: try backend.device())
    #expect(
        Set(report.comparisons.map(\.output)) == Set(golden.outputs.keys),
        sourceLocation: sourceLocation)
    expectPassed(report, name, sourceLocation: sourceLocation)
}

func random(_ count: Int, seed: UInt64, in range: ClosedRange<Float> = -1...1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return generator.uniform(count, in: range)
}

func fixture(_ name: String) throws -> URL {
    try #require(
        Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures"),
        "missing fixture \(name).json")
}

/// Plain triple-loop reference for `op(A) op(B)`, in double.
func naiveProduct(
    _ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool
) -> [Float] {
    var c = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var sum = 0.0
            for l in 0..<k {
                let x = transposeA ? a[l * m + i] : a[i * k + l]
                let y = transposeB ? b[j * k + l] : b[l * n + j]
                sum += Double(x) * Double(y)
            }
            c[i * n + j] = Float(sum)
        }
    }
    return c
}

/// A network for tests: a description with the input shape and classes it trains on.
struct TestNetwork: Sendable, CustomTestStringConvertible {
    var description: NetworkDescription
    var inputShape: [Int] = [1, 6, 6]
    var classes = 4
    var rule = LearningRule.signalPropagation

    var testDescription: String {
        "\(description.summary) on \(inputShape.map(String.init).joined(separator: "x"))"
            + (rule.name == .sigprop ? "" : " by \(rule.name.rawValue)")
    }

    /// PEPITA on dense layers of `widths` and the output layer, 1x6x6 input, 4 classes.
    static func pepita(_ widths: [Int]) -> TestNetwork {
        TestNetwork(
            description: NetworkDescription(layers: widths.map { .dense($0) }),
            rule: LearningRule(.pepita))
    }

    /// Forward-Forward on dense layers of `widths`, 1x6x6 input, 4 classes.
    static func forwardForward(_ widths: [Int]) -> TestNetwork {
        TestNetwork(
            description: NetworkDescription(layers: widths.map { .dense($0) }),
            rule: LearningRule(.ff))
    }

    /// An mlp of `hiddenLayers` blocks of `width` on 1x6x6 input, 4 classes.
    static func mlp(hiddenLayers: Int = 3, width: Int = 16) -> TestNetwork {
        TestNetwork(description: .mlp(hiddenLayers: hiddenLayers, width: width))
    }

    /// The cnn preset on `inputShape`, 4 classes.
    static func cnn(_ inputShape: [Int] = [1, 6, 6]) -> TestNetwork {
        TestNetwork(description: .cnn, inputShape: inputShape)
    }

    /// A spiking network of `layers` (lif<N>, lifconv<N>, pools) shown for `steps` steps.
    static func spiking(
        _ layers: String, learning: SpikingSettings.Learning = .voltage,
        reset: LIFNeuron.Reset = .subtract, steps: Int = 4,
        lossTiming: SpikingSettings.LossTiming = .mean, encoding: SpikeEncoding = .direct
    ) -> TestNetwork {
        var description = try! NetworkDescription(layerList: layers)
        description.spiking.encoding = encoding
        description.spiking.learning = learning
        description.spiking.lossTiming = lossTiming
        description.spiking.neuron.reset = reset
        description.spiking.timesteps = steps
        // Inputs in -1...1 at a low threshold: the neurons of these small nets fire.
        description.spiking.neuron.threshold = 0.5
        return TestNetwork(description: description)
    }

    func with(_ change: (inout NetworkDescription) -> Void) -> TestNetwork {
        var copy = self
        change(&copy.description)
        return copy
    }

    func with(rule: LearningRule) -> TestNetwork {
        var copy = self
        copy.rule = rule
        return copy
    }

    func plan() throws -> NetworkPlan {
        try NetworkPlan(description, inputShape: inputShape, classes: classes)
    }

    func build(
        _ devices: [Device], optimizer: OptimizerSettings = OptimizerSettings(), seed: UInt64
    ) throws -> Network {
        try Network(
            description, inputShape: inputShape, classes: classes, devices: devices,
            optimizer: optimizer, seed: seed, rule: rule)
    }

    func build(
        _ device: Device, optimizer: OptimizerSettings = OptimizerSettings(), seed: UInt64
    ) throws -> Network {
        try build([device], optimizer: optimizer, seed: seed)
    }
}
