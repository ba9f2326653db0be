import ArgumentParser
import Foundation
import SigProp

/// Lists the OpenCL platforms and devices, builds every kernel program on each, checks every
/// operation against the CPU fallback, and optionally checks the training math against
/// reference vectors. With --tune, first tunes the gemm kernels of each OpenCL device and
/// writes the tuning cache. Exits non-zero if anything fails.
@main
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Check the OpenCL devices and the CPU fallback: properties, kernel builds, "
            + "operations, reference vectors."
    )

    @Option(
        name: .long, parsing: .upToNextOption,
        help:
            ArgumentHelp(
                "Reference-vector JSON files (the format of docs/golden-vectors.md) to check on every "
                    + "device.")
    )
    var golden: [String] = []

    @Flag(name: .long, help: "Skip the OpenCL devices (check the CPU fallback only).")
    var cpuOnly = false

    @Flag(
        name: .long,
        help: """
            First tune the gemm kernels of each OpenCL device (those SIGPROP_DEVICE names, if set; takes minutes) and write \
            the tuning cache (SIGPROP_TUNING_CACHE, else sigprop/kernel-tuning.json in $XDG_CACHE_HOME or ~/.cache), then check as usual.
            """)
    var tune = false

    @Flag(
        name: .long,
        help: """
            Print the OpenBLAS kernel set this process runs ("running NAME") and those this CPU \
            runs ("runs NAME", one a line: OPENBLAS_CORETYPE values), then exit.
            """)
    var openblasKernels = false

    func validate() throws {
        if tune && cpuOnly {
            throw ValidationError("--tune tunes OpenCL devices; leave out --cpu-only")
        }
    }

    mutating func run() throws {
        if openblasKernels {
            // Before any device: a refused OPENBLAS_CORETYPE still shows what OpenBLAS runs.
            print("running \(OpenBLASKernels.current().core)")
            for name in OpenBLASKernels.kernelSetsForThisCPU { print("runs \(name)") }
            return
        }
        var failures = 0
        let environment = ProcessInfo.processInfo.environment
        let selection = try BackendSelection(environment: environment)
        if let note = Self.deviceVariableNote(environment: environment, tune: tune) {
            FileHandle.standardError.write(Data("note: \(note)\n".utf8))
        }
        let reference = try Device.cpu()
        var devices: [(label: String, device: Device)] = [("cpu", reference)]

        if !cpuOnly {
            do {
                let entries = try OpenCLDiscovery.allDevices()
                if entries.isEmpty {
                    print(
                        "OpenCL: no platform or device found (apt-get install pocl-opencl-icd for "
                            + "a CPU driver)."
                    )
                }
                if tune { failures += tuneDevices(entries, selection) }
                let (cache, warning) = selection.tuningCache()
                if let warning {
                    FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
                }
                for (index, entry) in entries.enumerated() {
                    printProperties(index: index, entry.info)
                    do {
                        devices.append(
                            ("opencl \(index)", try Device.opencl(entry, tuningCache: cache)))
                    } catch {
                        failures += 1
                        print("  FAIL cannot open the device: \(error)")
                    }
                }
            } catch {
                failures += 1
                print("OpenCL: enumeration failed: \(error)")
            }
        }

        for (label, device) in devices {
            print("\n== \(label): \(device.name)")
            if let origin = device.kernelParameterOrigin {
                print("  kernel parameters from \(origin)")
            }
            if device === reference, let advice = OpenBLASKernels.current().advice {
                print("  note: \(advice)")
            }
            do {
                let builds = try device.buildAllPrograms()
                for build in builds {
                    let name = build.program.padding(toLength: 12, withPad: " ", startingAt: 0)
                    print(
                        "  built \(name)" + String(format: "%7.1f ms  ", build.seconds * 1000)
                            + build.options)
                }
            } catch {
                failures += 1
                print("  FAIL kernel build: \(error)")
                continue
            }
            do {
                // The CPU fallback checks against itself only to prove the table runs; its
                // independent checks are the tests (naive loops, finite differences, golden).
                let results = try SelfCheck.run(on: device, reference: reference)
                let failed = results.filter { !$0.passed }
                for result in failed {
                    print(
                        String(
                            format: "  FAIL %@ %@: NMSE %.3g > %.0g", result.operation,
                            result.shape, result.error, result.tolerance))
                }
                failures += failed.count
                print(
                    "  operations: \(results.count - failed.count)/\(results.count) match the CPU "
                        + "fallback"
                )
            } catch {
                failures += 1
                print("  FAIL operation check: \(error)")
            }
            for path in golden {
                do {
                    let report = try GoldenCheck.run(path: path, on: device)
                    let status = report.passed ? "ok  " : "FAIL"
                    print("  \(status) golden \(report.name): \(report.summary)")
                    if !report.passed { failures += 1 }
                } catch {
                    failures += 1
                    print("  FAIL golden \(path): \(error)")
                }
            }
        }

        print(failures == 0 ? "\nAll checks passed." : "\n\(failures) check(s) failed.")
        if failures > 0 { throw ExitCode.failure }
    }

    /// Doctor checks every device, so a device choice in the environment only picks the
    /// devices --tune tunes; said, so that nobody reads the checks as being limited to it.
    static func deviceVariableNote(environment: [String: String], tune: Bool) -> String? {
        let name = BackendSelection.deviceVariable
        guard let value = environment[name], !value.isEmpty else { return nil }
        return tune
            ? "\(name)=\(value) picks the devices to tune; the checks cover every device"
            : "\(name)=\(value) is ignored: doctor checks every device (with --tune, "
                + "\(name) picks the devices to tune)"
    }

    /// Tunes the devices SIGPROP_DEVICE names (all without it); returns the number of failures.
    func tuneDevices(_ entries: [OpenCLDeviceEntry], _ selection: BackendSelection) -> Int {
        guard let cacheFile = selection.tuningCacheFile else {
            print(
                "FAIL --tune: no tuning cache file (\(KernelTuningCache.tuningVariable)=off, or "
                    + "none of \(KernelTuningCache.fileVariable), XDG_CACHE_HOME, HOME is set)"
            )
            return 1
        }
        let chosen: [OpenCLDeviceEntry]
        do { chosen = try selection.selected(from: entries) ?? entries } catch {
            print("FAIL --tune: \(error)")
            return 1
        }
        var failures = 0
        for (index, entry) in entries.enumerated()
        where chosen.contains(where: {
            $0.info.platformIndex == entry.info.platformIndex
                && $0.info.deviceIndex == entry.info.deviceIndex
        }) {
            print(
                "== tuning opencl \(index): \(entry.info.name), driver \(entry.info.driverVersion)")
            do {
                printTuning(try KernelTuning.tune(entry, cacheFile: cacheFile) { print("  " + $0) })
            } catch {
                failures += 1
                print("  FAIL tuning: \(error)")
            }
        }
        print("")
        return failures
    }

    func printTuning(_ report: KernelTuningReport) {
        func line(_ name: String, _ result: KernelTuningReport.Measurement) -> String {
            let shapes = report.shapes.indices.map {
                String(format: "%@ %.1f", report.shapes[$0].description, result.gflops(of: $0))
            }
            return String(
                format: "  %@ %.1f GFLOP/s  %@ (%@)", name, result.gflops, result.summary,
                shapes.joined(separator: ", "))
        }
        if let table = report.table {
            print(line("table", table))
        } else {
            print("  table  failed its check (see above)")
        }
        print(line("tuned", report.tuned) + (report.tunedIsTable ? "  = the table's value" : ""))
        if !report.skipped.isEmpty {
            print("  \(report.skipped.count) of \(report.candidates) candidates skipped")
        }
        print("  wrote \(report.cacheFile.path)")
    }

    func printProperties(index: Int, _ info: OpenCLDeviceInfo) {
        print(
            """
            OpenCL device \(index): \(info.name)
              platform       \(info.platformName) (platform \(info.platformIndex), device \(info.deviceIndex))
              vendor         \(info.vendor)
              type           \(info.kind.rawValue)
              version        \(info.version), driver \(info.driverVersion)
              compute units  \(info.computeUnits)
              global memory  \(formatBytes(info.globalMemoryBytes)) (largest buffer \(formatBytes(info.maxAllocationBytes)))
              local memory   \(formatBytes(info.localMemoryBytes))
              work-group     up to \(info.maxWorkGroupSize) work-items
              extensions     \(info.extensions.count): \(info.extensions.prefix(6).joined(separator: " "))\(info.extensions.count > 6 ? " ..." : "")
            """)
    }
}
