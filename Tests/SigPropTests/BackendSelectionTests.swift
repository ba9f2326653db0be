import Foundation
import Testing

@testable import SigProp

@Suite struct BackendSelectionTests {
    static func entry(_ name: String, _ kind: OpenCLDeviceInfo.Kind, index: Int)
        -> OpenCLDeviceEntry
    {
        OpenCLDeviceEntry(
            info: OpenCLDeviceInfo(
                platformIndex: 0, deviceIndex: index, platformName: "Test", name: name, vendor: "v",
                version: "OpenCL 1.2", driverVersion: "1",
                kind: kind, computeUnits: 1, globalMemoryBytes: 1 << 30, localMemoryBytes: 1 << 15,
                maxAllocationBytes: 1 << 28,
                maxWorkGroupSize: 256, extensions: []), id: nil)
    }

    static let entries = [
        entry("pthread-skylake", .cpu, index: 0), entry("NVIDIA H100", .gpu, index: 1),
        entry("NVIDIA A100", .gpu, index: 2),
    ]

    @Test func defaultsToAuto() throws {
        #expect(try BackendSelection(environment: [:]).choice == .auto)
        #expect(
            try BackendSelection(environment: ["SIGPROP_BACKEND": " OpenCL "]).choice == .opencl)
        #expect(try BackendSelection(environment: ["SIGPROP_BACKEND": "cpu"]).choice == .cpu)
    }

    @Test func unknownBackendListsValidValues() {
        #expect {
            _ = try BackendSelection(environment: ["SIGPROP_BACKEND": "cuda"])
        } throws: {
            "\($0)".contains("SIGPROP_BACKEND=cuda") && "\($0)".contains("auto, opencl, cpu")
        }
    }

    @Test func deviceWithCPUBackendIsRejected() {
        #expect(throws: SigPropError.self) {
            _ = try BackendSelection(environment: ["SIGPROP_BACKEND": "cpu", "SIGPROP_DEVICE": "0"])
        }
    }

    @Test func selectsByIndexOrNameSubstring() throws {
        #expect(try BackendSelection.select("1", from: Self.entries).info.name == "NVIDIA H100")
        #expect(try BackendSelection.select("h100", from: Self.entries).info.name == "NVIDIA H100")
        #expect(
            try BackendSelection.select("SKYLAKE", from: Self.entries).info.name
                == "pthread-skylake")
    }

    @Test func badSelectorsListTheDevicesFound() {
        for selector in ["7", "-1", "radeon", "nvidia"] {
            #expect {
                _ = try BackendSelection.select(selector, from: Self.entries)
            } throws: { error in
                let text = "\(error)"
                return text.contains("SIGPROP_DEVICE=\(selector)")
                    && text.contains("1: NVIDIA H100") && text.contains("2: NVIDIA A100")
            }
        }
    }

    @Test func autoWithoutGPUUsesTheCPUFallback() throws {
        let selection = try BackendSelection(environment: [:])
        let (devices, warnings) = try selection.makeDevices(discover: { [Self.entries[0]] })
        // No warning but OpenBLAS's advice, where this machine gets one.
        #expect(
            devices.map(\.kind) == [.cpu]
                && warnings == (OpenBLASKernels.current().advice.map { [$0] } ?? []))
        let (fallback, fallbackWarnings) = try selection.makeDevices(discover: {
            throw OpenCLError(code: -1001, call: "clGetPlatformIDs")
        })
        #expect(fallback.map(\.kind) == [.cpu])
        #expect(fallbackWarnings.first?.contains("CL_PLATFORM_NOT_FOUND_KHR") == true)
    }

    @Test func fusedUpdateVariableSetsEveryDevice() throws {
        #expect(try BackendSelection(environment: [:]).fusedUpdate == nil)
        #expect(
            try BackendSelection(environment: ["SIGPROP_FUSED_UPDATE": "auto"]).fusedUpdate == nil)
        for (value, fused) in [("on", true), (" OFF ", false)] {
            let selection = try BackendSelection(environment: [
                "SIGPROP_BACKEND": "cpu", "SIGPROP_SPLIT": "2", "SIGPROP_FUSED_UPDATE": value,
            ])
            let devices = try selection.makeDevices().devices
            #expect(
                devices.count == 2 && devices.allSatisfy { $0.fusesWeightUpdates == fused },
                "\(value)")
        }
        // auto leaves each device its capability (the CPU's: unfused).
        #expect(
            try BackendSelection(environment: ["SIGPROP_BACKEND": "cpu"]).makeDevices().devices
                .allSatisfy { !$0.fusesWeightUpdates })
        #expect {
            _ = try BackendSelection(environment: ["SIGPROP_FUSED_UPDATE": "yes"])
        } throws: {
            "\($0)".contains("SIGPROP_FUSED_UPDATE=yes")
                && "\($0)".contains("auto (default: the device's), on, off")
        }
    }

    @Test func openclWithoutDevicesIsAnError() throws {
        let selection = try BackendSelection(environment: ["SIGPROP_BACKEND": "opencl"])
        #expect { _ = try selection.makeDevices(discover: { [] }) } throws: {
            "\($0)".contains("pocl-opencl-icd")
        }
        #expect(throws: OpenCLError.self) {
            _ = try selection.makeDevices(discover: {
                throw OpenCLError(code: -1001, call: "clGetPlatformIDs")
            })
        }
    }

    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func openclSelectsARealDevice() throws {
        let (devices, _) = try BackendSelection(environment: [
            "SIGPROP_BACKEND": "opencl", "SIGPROP_DEVICE": "0",
        ]).makeDevices()
        #expect(devices.count == 1 && devices[0].kind == .opencl)
        #expect(devices[0].name.contains(TestBackend.openCLEntries[0].info.name))
    }
}

/// OpenBLAS's kernel choice (`OpenBLASKernels`): replaced only by kernels with wider vectors
/// that the CPU's flags allow, never when the user chose.
@Suite struct OpenBLASKernelsTests {
    static let avx512 = Set([
        "sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
    ])
    static let avx2 = Set(["sse3", "avx", "avx2", "fma"])

    @Test func fasterKernelsFollowTheCPUsWidestVectors() {
        #expect(OpenBLASKernels.fasterCore(than: "Prescott", cpuFlags: Self.avx512) == "SkylakeX")
        #expect(OpenBLASKernels.fasterCore(than: "Haswell", cpuFlags: Self.avx512) == "SkylakeX")
        #expect(OpenBLASKernels.fasterCore(than: "ZEN", cpuFlags: Self.avx512) == "SkylakeX")
        #expect(OpenBLASKernels.fasterCore(than: "Prescott", cpuFlags: Self.avx2) == "Haswell")
        #expect(
            OpenBLASKernels.fasterCore(than: "Nehalem", cpuFlags: ["sse3", "avx"]) == "Sandybridge")
        // Already the widest, or wider than the flags: left alone.
        #expect(OpenBLASKernels.fasterCore(than: "Haswell", cpuFlags: Self.avx2) == nil)
        #expect(OpenBLASKernels.fasterCore(than: "Cooperlake", cpuFlags: Self.avx512) == nil)
        #expect(OpenBLASKernels.fasterCore(than: "Prescott", cpuFlags: ["sse3"]) == nil)
        // AVX-512 without BW/DQ/VL (Knights Landing) cannot run the SkylakeX kernels.
        #expect(
            OpenBLASKernels.fasterCore(
                than: "Sandybridge", cpuFlags: Self.avx2.union(["avx512f", "avx512cd"]))
                == "Haswell")
        // Cores this table does not know (other architectures), or no flags read: left alone.
        #expect(OpenBLASKernels.fasterCore(than: "NEOVERSEN1", cpuFlags: Self.avx512) == nil)
        #expect(OpenBLASKernels.fasterCore(than: "Prescott", cpuFlags: []) == nil)
    }

    /// An `OPENBLAS_CORETYPE` OpenBLAS did not take, or whose instructions the CPU lacks, is
    /// refused with the kernel sets the CPU runs (OpenBLAS itself runs other kernels silently).
    @Test func unusableCoreTypesAreRefused() throws {
        func problem(_ requested: String, running: String, flags: Set<String>, dynamic: Bool = true)
            -> String?
        {
            OpenBLASKernels.problem(
                requested: requested, running: running, cpuFlags: flags,
                version: "OpenBLAS 0.3.21", dynamic: dynamic)
        }
        let avx2 = Self.avx2.union(["pni", "ssse3", "sse4_1", "sse4_2"])
        #expect(problem("haswell", running: "Haswell", flags: avx2) == nil)
        #expect(problem("Zen", running: "Zen", flags: []) == nil)
        let unknown = try #require(problem("Haswel", running: "Prescott", flags: avx2))
        #expect(unknown.contains("OPENBLAS_CORETYPE=Haswel is not a kernel set of OpenBLAS 0.3.21"))
        #expect(unknown.contains("runs its Prescott kernels instead"))
        #expect(
            unknown.contains(
                "Kernel sets this CPU runs: Prescott, Core2, Penryn, Dunnington, Nehalem, Atom, "
                    + "Nano, Sandybridge, Haswell, Zen."))
        let lacking = try #require(problem("SkylakeX", running: "SkylakeX", flags: avx2))
        #expect(lacking.contains("lacks (avx512bw, avx512cd, avx512dq, avx512f, avx512vl)"))
        #expect(lacking.contains("Haswell, Zen."))
        let fixed = try #require(problem("Haswell", running: "SkylakeX", flags: [], dynamic: false))
        #expect(fixed.contains("built for its SkylakeX kernels alone"))
    }

    /// The check runs on this process's OpenBLAS: its own kernel set passes, a made-up name
    /// does not, and `Device.cpu` makes the check.
    @Test func thisProcesssCoreTypeIsChecked() throws {
        let running = OpenBLASKernels.current().core
        try OpenBLASKernels.checkChosenCore(environment: [OpenBLASKernels.variable: running])
        try OpenBLASKernels.checkChosenCore(environment: [:])
        #expect {
            try OpenBLASKernels.checkChosenCore(
                environment: [OpenBLASKernels.variable: "NoSuchCore"])
        } throws: { "\($0)".contains("NoSuchCore is not a kernel set") }
        if let requested = ProcessInfo.processInfo.environment[OpenBLASKernels.variable],
            !requested.isEmpty
        {
            #expect(requested.lowercased() == running.lowercased(), "Device.cpu() would refuse")
        }
    }

    /// `train` refuses to start under a core type OpenBLAS does not have, instead of training
    /// on kernels the user did not choose.
    @Test func trainRefusesAnUnknownCoreType() throws {
        let (data, checkpoints) = try ProcessTests.workspace()
        defer { try? FileManager.default.removeItem(at: data.deletingLastPathComponent()) }
        let errors = Pipe()
        let process = try ProcessTests.launch(
            ["--epochs", "1", "--data-dir", data.path, "--checkpoint-dir", checkpoints.path],
            errors: errors, environment: [OpenBLASKernels.variable: "NoSuchCore"])
        let text = String(
            decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(text.contains("OPENBLAS_CORETYPE=NoSuchCore is not a kernel set"), "\(text)")
        #expect(text.contains("Kernel sets this CPU runs:"), "\(text)")
    }

    @Test func aCoreTypeTheUserSetIsKept() {
        let kernels = OpenBLASKernels.current(environment: [OpenBLASKernels.variable: "Prescott"])
        #expect(kernels.faster == nil && kernels.advice == nil)
        #expect(!kernels.core.isEmpty)
    }
}
