import ArgumentParser
import Foundation
import SigProp

/// Lists the OpenCL platforms and devices, builds every kernel program on each, checks every
/// operation against the CPU fallback, and optionally checks the training math against
/// reference vectors. Exits non-zero if anything fails.
@main
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the OpenCL devices and the CPU fallback: properties, kernel builds, operations, reference vectors.")

    @Option(name: .long, parsing: .upToNextOption,
            help: "Reference-vector JSON files (the format of shared/golden/README.md) to check on every device.")
    var golden: [String] = []

    @Flag(name: .long, help: "Skip the OpenCL devices (check the CPU fallback only).")
    var cpuOnly = false

    mutating func run() throws {
        var failures = 0
        let reference = try Device.cpu()
        var devices: [(label: String, device: Device)] = [("cpu", reference)]

        if !cpuOnly {
            do {
                let entries = try OpenCLDiscovery.allDevices()
                if entries.isEmpty {
                    print("OpenCL: no platform or device found (apt-get install pocl-opencl-icd for a CPU driver).")
                }
                for (index, entry) in entries.enumerated() {
                    printProperties(index: index, entry.info)
                    do {
                        devices.append(("opencl \(index)", try Device.opencl(entry)))
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
            do {
                let builds = try device.buildAllPrograms()
                for build in builds {
                    let name = build.program.padding(toLength: 12, withPad: " ", startingAt: 0)
                    print("  built \(name)" + String(format: "%7.1f ms  ", build.seconds * 1000) + build.options)
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
                    print(String(format: "  FAIL %@ %@: NMSE %.3g > %.0g", result.operation, result.shape, result.error, result.tolerance))
                }
                failures += failed.count
                print("  operations: \(results.count - failed.count)/\(results.count) match the CPU fallback")
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

    func printProperties(index: Int, _ info: OpenCLDeviceInfo) {
        print("""
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
