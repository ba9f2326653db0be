import Foundation
import Testing

@testable import SigProp

/// The OpenCL layer itself, on every OpenCL device found (PoCL in CI).
@Suite(.enabled(if: !TestBackend.openCLEntries.isEmpty, "no OpenCL device"))
struct OpenCLRuntimeTests {
    @Test func deviceQueryReportsLimits() throws {
        for entry in TestBackend.openCLEntries {
            let info = entry.info
            #expect(!info.name.isEmpty)
            #expect(!info.platformName.isEmpty)
            #expect(info.computeUnits >= 1)
            #expect(info.maxWorkGroupSize >= 1)
            #expect(info.globalMemoryBytes > 0)
            #expect(info.localMemoryBytes > 0)
            #expect(
                info.maxAllocationBytes > 0 && info.maxAllocationBytes <= info.globalMemoryBytes)
            #expect(info.version.hasPrefix("OpenCL"))
        }
    }

    @Test func kernelParametersFitTheDevice() throws {
        for entry in TestBackend.openCLEntries {
            let tile = KernelParameters.forDevice(entry.info).gemmTile
            #expect(tile >= 1 && tile * tile <= entry.info.maxWorkGroupSize)
        }
        // A device with small limits still resolves to a tile that fits.
        let small = OpenCLDeviceInfo(
            platformIndex: 0, deviceIndex: 0, platformName: "p", name: "tiny", vendor: "v",
            version: "OpenCL 1.2",
            driverVersion: "1", kind: .gpu, computeUnits: 1, globalMemoryBytes: 1 << 20,
            localMemoryBytes: 1024,
            maxAllocationBytes: 1 << 18, maxWorkGroupSize: 64, extensions: [])
        let tile = KernelParameters.forDevice(small).gemmTile
        #expect(tile * tile <= 64 && 2 * tile * (tile + 1) * 4 <= 1024)
    }

    @Test func bufferRoundTrip() throws {
        let device = try TestBackend.opencl.device()
        let values = random(1000, seed: 1)
        let tensor = try device.tensor(values, shape: [10, 100])
        #expect(try device.read(tensor) == values)
        let copy = try device.zeros([1000])
        try device.copy(tensor, to: copy)
        #expect(try device.read(copy) == values)
    }

    @Test func kernelLaunchWritesEveryElement() throws {
        let device = try TestBackend.opencl.device()
        for count in [1, 7, 129, 1000] {
            let tensor = try device.zeros([count])
            try device.fill(tensor, with: 2.5)
            #expect(
                try device.read(tensor) == [Float](repeating: 2.5, count: count), "count \(count)")
        }
    }

    @Test func statusCodesHaveSymbolicNames() {
        #expect(OpenCLError.name(of: -5) == "CL_OUT_OF_RESOURCES")
        #expect(OpenCLError.name(of: -46) == "CL_INVALID_KERNEL_NAME")
        #expect(OpenCLError.name(of: -1001) == "CL_PLATFORM_NOT_FOUND_KHR")
        #expect(OpenCLError.name(of: -9999) == "CL_UNKNOWN_ERROR(-9999)")
        let error = OpenCLError(code: -5, call: "clEnqueueNDRangeKernel", context: "kernel gemm")
        #expect(
            error.description.contains(
                "CL_OUT_OF_RESOURCES in clEnqueueNDRangeKernel (kernel gemm)"))
        #expect(error.description.contains("smaller --batch-size"))
    }

    @Test func unknownKernelNameIsReportedByName() throws {
        let backend = try OpenCLBackend(entry: TestBackend.openCLEntries[0])
        let program = try backend.compile(
            name: "tiny", source: "__kernel void present(__global float* x) { x[0] = 1.0f; }",
            options: "")
        #expect {
            _ = try CLKernel(program: program, name: "absent")
        } throws: { error in
            let error = error as? OpenCLError
            return error?.name == "CL_INVALID_KERNEL_NAME" && error?.call == "clCreateKernel"
                && (error?.context ?? "").contains("absent")
        }
    }

    @Test func buildFailureCarriesTheBuildLog() throws {
        let backend = try OpenCLBackend(entry: TestBackend.openCLEntries[0])
        #expect {
            _ = try backend.compile(
                name: "broken",
                source: "__kernel void broken(__global float* x) { x[0] = undeclared_name; }",
                options: "-cl-std=CL1.2")
        } throws: { error in
            guard let error = error as? OpenCLBuildError else { return false }
            return error.program == "broken" && error.log.contains("undeclared_name")
                && error.description.contains("Build log")
        }
    }

    @Test func everyEmbeddedProgramBuilds() throws {
        let reports = try TestBackend.opencl.device().buildAllPrograms()
        #expect(Set(reports.map(\.program)) == Set(KernelRegistry.programNames))
        #expect(KernelRegistry.programNames.contains("gemm"))
        #expect(!KernelRegistry.programNames.contains(KernelRegistry.commonName))
        #expect(
            reports.allSatisfy {
                !$0.options.contains("fast-relaxed-math") && !$0.options.contains("finite-math")
            })
    }

    @Test func oversizedAllocationSaysHowMuch() throws {
        let device = try TestBackend.opencl.device()
        let info = TestBackend.openCLEntries[0].info
        let count = Int(info.maxAllocationBytes / 4) + 1024
        #expect {
            _ = try device.zeros([count])
        } throws: { error in
            guard case .outOfMemory(_, let requested, let limit, _)? = error as? SigPropError else {
                return false
            }
            return requested == count * 4 && limit == info.maxAllocationBytes
                && "\(error)".contains("--batch-size")
        }
    }
}
