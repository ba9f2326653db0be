import Testing
@testable import SigProp

@Suite struct BackendSelectionTests {
    static func entry(_ name: String, _ kind: OpenCLDeviceInfo.Kind, index: Int) -> OpenCLDeviceEntry {
        OpenCLDeviceEntry(info: OpenCLDeviceInfo(
            platformIndex: 0, deviceIndex: index, platformName: "Test", name: name, vendor: "v", version: "OpenCL 1.2", driverVersion: "1",
            kind: kind, computeUnits: 1, globalMemoryBytes: 1 << 30, localMemoryBytes: 1 << 15, maxAllocationBytes: 1 << 28,
            maxWorkGroupSize: 256, extensions: []), id: nil)
    }

    static let entries = [entry("pthread-skylake", .cpu, index: 0), entry("NVIDIA H100", .gpu, index: 1), entry("NVIDIA A100", .gpu, index: 2)]

    @Test func defaultsToAuto() throws {
        #expect(try BackendSelection(environment: [:]).choice == .auto)
        #expect(try BackendSelection(environment: ["SIGPROP_BACKEND": " OpenCL "]).choice == .opencl)
        #expect(try BackendSelection(environment: ["SIGPROP_BACKEND": "cpu"]).choice == .cpu)
    }

    @Test func unknownBackendListsValidValues() {
        #expect {
            _ = try BackendSelection(environment: ["SIGPROP_BACKEND": "cuda"])
        } throws: { "\($0)".contains("SIGPROP_BACKEND=cuda") && "\($0)".contains("auto, opencl, cpu") }
    }

    @Test func deviceWithCPUBackendIsRejected() {
        #expect(throws: SigPropError.self) {
            _ = try BackendSelection(environment: ["SIGPROP_BACKEND": "cpu", "SIGPROP_DEVICE": "0"])
        }
    }

    @Test func selectsByIndexOrNameSubstring() throws {
        #expect(try BackendSelection.select("1", from: Self.entries).info.name == "NVIDIA H100")
        #expect(try BackendSelection.select("h100", from: Self.entries).info.name == "NVIDIA H100")
        #expect(try BackendSelection.select("SKYLAKE", from: Self.entries).info.name == "pthread-skylake")
    }

    @Test func badSelectorsListTheDevicesFound() {
        for selector in ["7", "-1", "radeon", "nvidia"] {
            #expect {
                _ = try BackendSelection.select(selector, from: Self.entries)
            } throws: { error in
                let text = "\(error)"
                return text.contains("SIGPROP_DEVICE=\(selector)") && text.contains("1: NVIDIA H100") && text.contains("2: NVIDIA A100")
            }
        }
    }

    @Test func autoWithoutGPUUsesTheCPUFallback() throws {
        let selection = try BackendSelection(environment: [:])
        let (devices, warnings) = try selection.makeDevices(discover: { [Self.entries[0]] })
        #expect(devices.map(\.kind) == [.cpu] && warnings.isEmpty)
        let (fallback, fallbackWarnings) = try selection.makeDevices(discover: { throw OpenCLError(code: -1001, call: "clGetPlatformIDs") })
        #expect(fallback.map(\.kind) == [.cpu])
        #expect(fallbackWarnings.first?.contains("CL_PLATFORM_NOT_FOUND_KHR") == true)
    }

    @Test func openclWithoutDevicesIsAnError() throws {
        let selection = try BackendSelection(environment: ["SIGPROP_BACKEND": "opencl"])
        #expect { _ = try selection.makeDevices(discover: { [] }) } throws: { "\($0)".contains("pocl-opencl-icd") }
        #expect(throws: OpenCLError.self) { _ = try selection.makeDevices(discover: { throw OpenCLError(code: -1001, call: "clGetPlatformIDs") }) }
    }

    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func openclSelectsARealDevice() throws {
        let (devices, _) = try BackendSelection(environment: ["SIGPROP_BACKEND": "opencl", "SIGPROP_DEVICE": "0"]).makeDevices()
        #expect(devices.count == 1 && devices[0].kind == .opencl)
        #expect(devices[0].name.contains(TestBackend.openCLEntries[0].info.name))
    }
}
