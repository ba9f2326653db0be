import Foundation
import Testing

@testable import SigProp

/// The kernel tuner and its cache. Every test uses a cache file of its own, named explicitly
/// (never the user's cache, never through the process environment: tests run in parallel).
@Suite struct KernelTuningTests {
    static let cpuInfo = GemmKernelTests.info(kind: .cpu, name: "pthread-skylake-avx512-AMD EPYC")
    static let gpuInfo = GemmKernelTests.info(kind: .gpu, name: "NVIDIA H100")

    /// A fresh cache path in a folder of its own (the folder does not exist yet).
    static func cacheFile() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent(
            "sigprop-tuning-\(UUID().uuidString)"
        ).appendingPathComponent("kernel-tuning.json")
    }

    static func entry(_ info: OpenCLDeviceInfo, _ parameters: KernelParameters)
        -> KernelTuningCache.Entry
    {
        KernelTuningCache.Entry(for: info, parameters: parameters, tunedGFLOPS: 2, tableGFLOPS: 1)
    }

    @Test func candidatesStartFromTheTableAndFitTheDevice() {
        let devices =
            [
                Self.cpuInfo, GemmKernelTests.info(kind: .cpu, name: "pthread-haswell-Intel Xeon"),
                Self.gpuInfo,
                GemmKernelTests.info(kind: .gpu, name: "tiny", localBytes: 1024, groupSize: 64),
                GemmKernelTests.info(kind: .gpu, name: "small", localBytes: 4096, groupSize: 128),
                GemmKernelTests.info(kind: .other, name: "dsp", localBytes: 2048, groupSize: 16),
            ] + TestBackend.openCLEntries.map(\.info)
        for info in devices {
            let candidates = KernelTuning.candidates(for: info)
            #expect(
                candidates.first == KernelParameters.forDevice(info),
                "\(info.name): the table's value comes first")
            #expect(
                Set(candidates.map(\.summary)).count == candidates.count,
                "\(info.name): no candidate twice")
            for p in candidates {
                #expect(
                    p.fits(info),
                    Comment(
                        rawValue: "\(info.name): \(p.summary) needs \(p.gemmTile)² work-items and "
                            + "\(p.gemmTiledLocalBytes) bytes of local memory")
                )
                #expect(
                    p.gemmKernels == candidates[0].gemmKernels,
                    "\(info.name): candidates stay in the table's kernel family")
            }
        }
        #expect(KernelTuning.candidates(for: Self.cpuInfo).count > 10)
        #expect(KernelTuning.candidates(for: Self.gpuInfo).count > 10)
        // 1 KiB of local memory rules out most tiles: the limit is applied, not just checked.
        #expect(
            KernelTuning.candidates(
                for: GemmKernelTests.info(kind: .gpu, name: "tiny", localBytes: 1024, groupSize: 64)
            ).count < 5)
    }

    @Test func cacheRoundTripKeepsOtherDevicesEntries() throws {
        let file = Self.cacheFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let cpuTuned = KernelTuning.candidates(for: Self.cpuInfo)[1]
        let gpuTuned = KernelTuning.candidates(for: Self.gpuInfo)[1]
        try KernelTuningCache.record(Self.entry(Self.cpuInfo, cpuTuned), in: file)
        try KernelTuningCache.record(Self.entry(Self.gpuInfo, gpuTuned), in: file)

        var (cache, warning) = KernelTuningCache.load(file)
        #expect(warning == nil)
        #expect(cache.entries.count == 2)
        #expect(cache.parameters(for: Self.cpuInfo) == (cpuTuned, .tuningCache(file: file.path)))
        #expect(cache.parameters(for: Self.gpuInfo) == (gpuTuned, .tuningCache(file: file.path)))

        // Tuning the CPU again replaces its entry only.
        let cpuRetuned = KernelTuning.candidates(for: Self.cpuInfo)[2]
        try KernelTuningCache.record(Self.entry(Self.cpuInfo, cpuRetuned), in: file)
        (cache, warning) = KernelTuningCache.load(file)
        #expect(warning == nil)
        #expect(cache.entries.count == 2)
        #expect(cache.parameters(for: Self.cpuInfo).parameters == cpuRetuned)
        #expect(cache.parameters(for: Self.gpuInfo).parameters == gpuTuned)
        let text = try String(contentsOf: file, encoding: .utf8)
        #expect(
            text.contains("\"format\" : \(KernelTuningCache.formatVersion)"),
            "the file carries its format version")
        let leftovers = try FileManager.default.contentsOfDirectory(
            atPath: file.deletingLastPathComponent().path
        ).filter { $0 != file.lastPathComponent }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    @Test func entriesOfAnotherDriverOrBeyondTheLimitsAreIgnored() throws {
        let file = Self.cacheFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        try KernelTuningCache.record(
            Self.entry(Self.cpuInfo, KernelTuning.candidates(for: Self.cpuInfo)[1]), in: file)
        let newDriver = OpenCLDeviceInfo(
            platformIndex: 0, deviceIndex: 0, platformName: Self.cpuInfo.platformName,
            name: Self.cpuInfo.name, vendor: "v",
            version: "OpenCL 1.2", driverVersion: "2", kind: .cpu, computeUnits: 1,
            globalMemoryBytes: 1 << 30, localMemoryBytes: 64 << 10,
            maxAllocationBytes: 1 << 28, maxWorkGroupSize: 1024, extensions: [])
        #expect(
            KernelTuningCache.load(file).cache.parameters(for: newDriver) == (
                KernelParameters.forDevice(newDriver), .table
            ))

        // An entry for this very device that no longer fits it (say, a driver that now reports a
        // smaller work-group limit under the same version) is not used either.
        let small = GemmKernelTests.info(
            kind: .gpu, name: "small", localBytes: 4096, groupSize: 128)
        var tooBig = KernelParameters.forDevice(small)
        tooBig.gemmTile = 16
        try KernelTuningCache.record(Self.entry(small, tooBig), in: file)
        #expect(
            KernelTuningCache.load(file).cache.parameters(for: small) == (
                KernelParameters.forDevice(small), .table
            ))
    }

    @Test func unusableCacheFileYieldsTheTableAndOneWarningNamingIt() throws {
        let file = Self.cacheFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        try FileManager.default.createDirectory(
            at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        for (contents, problem) in [
            ("{ \"format\": 1, \"entries\": [ {", "cannot be parsed"),
            ("not json", "cannot be parsed"), ("{\"entries\": []}", "No value associated with key"),
            ("{\"format\": 99, \"entries\": []}", "has format 99"),
        ] {
            try Data(contents.utf8).write(to: file)
            let (cache, warning) = KernelTuningCache.load(file)
            #expect(cache.entries.isEmpty)
            #expect(
                cache.parameters(for: Self.cpuInfo) == (
                    KernelParameters.forDevice(Self.cpuInfo), .table
                ))
            let text = try #require(warning, "no warning for \(contents)")
            #expect(text.contains(file.path) && text.contains(problem), "\(text)")
            #expect(
                text.contains("Delete the file") && text.contains("doctor --tune"),
                "the warning names the fix: \(text)")
        }
        // No file at all is the usual case: no warning.
        #expect(KernelTuningCache.load(Self.cacheFile()).warning == nil)

        // Through backend selection: one warning for all the devices it opens, and the table.
        guard !TestBackend.openCLEntries.isEmpty else { return }
        let split = TestBackend.openCLEntries[0].info.maxSubDevices >= 2 ? "2" : "1"
        let selection = try BackendSelection(environment: [
            "SIGPROP_BACKEND": "opencl", "SIGPROP_SPLIT": split, "SIGPROP_TUNING_CACHE": file.path,
        ])
        let (devices, warnings) = try selection.makeDevices()
        #expect(warnings.count == 1 && warnings[0].contains(file.path), "\(warnings)")
        #expect(devices.allSatisfy { $0.kernelParameterOrigin == .table })
        // A tuning run replaces an unusable file.
        try KernelTuningCache.record(
            Self.entry(
                TestBackend.openCLEntries[0].info,
                KernelParameters.forDevice(TestBackend.openCLEntries[0].info)), in: file)
        #expect(KernelTuningCache.load(file).warning == nil)
    }

    @Test func environmentNamesTheCacheFileOrTurnsTuningOff() throws {
        let file = { try KernelTuningCache.file(environment: $0)?.path }
        #expect(
            try file(["SIGPROP_TUNING_CACHE": "/x/t.json", "XDG_CACHE_HOME": "/c", "HOME": "/h"])
                == "/x/t.json")
        #expect(
            try file(["XDG_CACHE_HOME": "/c", "HOME": "/h"]) == "/c/sigprop/kernel-tuning.json")
        #expect(
            try file(["HOME": "/h", "SIGPROP_TUNING": "on"])
                == "/h/.cache/sigprop/kernel-tuning.json")
        #expect(
            try file(["SIGPROP_TUNING": "OFF", "SIGPROP_TUNING_CACHE": "/x/t.json", "HOME": "/h"])
                == nil)
        #expect(try file([:]) == nil, "no HOME and no variable: no cache, the table")
        #expect { _ = try file(["SIGPROP_TUNING": "fast"]) } throws: {
            "\($0)".contains("SIGPROP_TUNING=fast") && "\($0)".contains("on, off")
        }
        #expect(
            try BackendSelection(environment: ["SIGPROP_TUNING": "off", "HOME": "/h"])
                .tuningCacheFile == nil)
    }

    /// A cached value that is not the table's reaches the kernels' build options and computes
    /// like the CPU fallback; with SIGPROP_TUNING=off the same file is ignored.
    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func cachedParametersReachTheKernels() throws {
        let file = Self.cacheFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let info = TestBackend.openCLEntries[0].info
        let tuned = KernelTuning.candidates(for: info)[1]
        try KernelTuningCache.record(Self.entry(info, tuned), in: file)

        let device = try Self.openCLDevice(["SIGPROP_TUNING_CACHE": file.path])
        #expect(device.kernelParameterOrigin == .tuningCache(file: file.path))
        let gemmOptions = try #require(
            try device.buildAllPrograms().first { $0.program == "gemm" }?.options)
        #expect(gemmOptions == KernelRegistry.options(for: "gemm", parameters: tuned))
        try Self.expectGemmMatchesPlainLoops(on: device)

        let off = try Self.openCLDevice([
            "SIGPROP_TUNING_CACHE": file.path, "SIGPROP_TUNING": "off",
        ])
        #expect(off.kernelParameterOrigin == .table)
    }

    /// A real tuning run on two or three candidates and small shapes writes an entry that the next
    /// backend uses, and gemm there still matches plain loops.
    @Test(.enabled(if: !TestBackend.openCLEntries.isEmpty))
    func tinyTuningRunIsUsedByTheNextBackend() throws {
        let file = Self.cacheFile()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let entry = TestBackend.openCLEntries[0]
        let all = KernelTuning.candidates(for: entry.info)
        // Small register blocks only: PoCL generates code for a program's kernels again for any
        // change of its -D values, and for the table's large blocks that takes it 10-20 s.
        func small(_ outerVectors: Int, _ dotWidth: Int) -> KernelParameters {
            var p = all[0]
            (p.gemmVectorWidth, p.gemmOuterRows, p.gemmOuterVectors) = (8, 4, outerVectors)
            (p.gemmDotVectorWidth, p.gemmDotRows, p.gemmDotColumns) = (dotWidth, 2, 2)
            return p
        }
        let candidates =
            all[0].gemmKernels == .registerBlocked
            ? [small(1, 8), small(2, 4)] : Array(all.prefix(3))
        #expect(candidates.allSatisfy { $0.fits(entry.info) })
        let shapes = [
            KernelTuning.Shape(48, 80, 72, "NT"), KernelTuning.Shape(80, 72, 48, "TN"),
            KernelTuning.Shape(64, 64, 64, "NN"),
        ]
        var lines: [String] = []
        let report = try KernelTuning.tune(
            entry, candidates: candidates, shapes: shapes, rounds: 3, cacheFile: file
        ) { lines.append($0) }

        #expect(report.skipped.isEmpty, "\(report.skipped)")
        #expect(
            lines.contains {
                $0.hasPrefix("candidate \(candidates.count) of \(candidates.count): ")
                    && $0.hasSuffix("GFLOP/s")
            }, "\(lines)")
        #expect(report.tuned.gflops > 0 && report.tuned.seconds.count == shapes.count)
        let cached = try #require(KernelTuningCache.load(file).cache.entry(for: entry.info))
        #expect(cached.parameters == report.tuned.parameters)

        let device = try Self.openCLDevice(["SIGPROP_TUNING_CACHE": file.path])
        #expect(device.kernelParameterOrigin == .tuningCache(file: file.path))
        #expect((device.backend as? OpenCLBackend)?.parameters == report.tuned.parameters)
        try Self.expectGemmMatchesPlainLoops(on: device)
    }

    /// The default OpenCL device as `train` would open it with `environment`.
    static func openCLDevice(_ environment: [String: String]) throws -> Device {
        let (devices, warnings) = try BackendSelection(
            environment: environment.merging(["SIGPROP_BACKEND": "opencl"]) { $1 }
        ).makeDevices()
        #expect(warnings.isEmpty, "\(warnings)")
        return try #require(devices.first)
    }

    /// Awkward shapes in every transpose, above the direct kernel's limit (the tuned kernels run).
    static func expectGemmMatchesPlainLoops(on device: Device) throws {
        for (m, n, k) in [(67, 45, 131), (129, 100, 64), (33, 200, 70)] {
            for (ta, tb) in GemmKernelTests.transposes {
                let a = random(m * k, seed: UInt64(m))
                let b = random(k * n, seed: UInt64(n))
                let c = try device.zeros([m, n])
                try device.gemm(
                    try device.tensor(a, shape: ta ? [k, m] : [m, k]), transposeA: ta,
                    try device.tensor(b, shape: tb ? [n, k] : [k, n]), transposeB: tb, into: c)
                expectClose(
                    try device.read(c),
                    naiveProduct(a, b, m: m, n: n, k: k, transposeA: ta, transposeB: tb),
                    absolute: 2e-4,
                    "tuned gemm \(GemmKernelTests.describe(m, n, k, ta, tb))")
            }
        }
    }
}
