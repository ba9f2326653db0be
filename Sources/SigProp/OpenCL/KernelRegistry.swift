/// Compile-time constants for the kernels, chosen per device (CLBlast-style): each `.cl` file
/// compiles on its own with its defaults; the host prepends `-D` values that fit the device.
struct KernelParameters: Equatable, Sendable {
    /// Side of the square gemm work-group tile (`TILE` in gemm.cl).
    var gemmTile: Int

    /// The table: device kind, then the device's limits. Every device resolves to a value.
    static func forDevice(_ info: OpenCLDeviceInfo) -> KernelParameters {
        let preferred: Int
        switch info.kind {
        case .gpu: preferred = 16
        // CPU drivers (PoCL) gain little from local-memory tiles; smaller groups suit them.
        case .cpu: preferred = 8
        case .accelerator, .other: preferred = 8
        }
        var tile = preferred
        // The work-group (tile x tile) and the two local tiles must fit the device.
        while tile > 1 && (tile * tile > info.maxWorkGroupSize || UInt64(2 * tile * (tile + 1) * 4) > info.localMemoryBytes) {
            tile /= 2
        }
        return KernelParameters(gemmTile: tile)
    }

    /// `-D` definitions for one program.
    func defines(for program: String) -> [String: Int] {
        switch program {
        case "gemm": ["TILE": gemmTile]
        default: [:]
        }
    }
}

/// The kernel programs: name -> source (embedded from Kernels/*.cl at build time) -> options.
/// `common.cl` is prepended to every program; each other file is one program.
enum KernelRegistry {
    static let commonName = "common"

    static var programNames: [String] {
        EmbeddedKernels.sources.keys.filter { $0 != commonName }.sorted()
    }

    static func source(of program: String) -> String? {
        guard let body = EmbeddedKernels.sources[program] else { return nil }
        return (EmbeddedKernels.sources[commonName] ?? "") + "\n" + body
    }

    /// Build options: OpenCL C 1.2 and the device's parameters. No fast-math flags: training
    /// must see NaN and Inf to stop on them.
    static func options(for program: String, parameters: KernelParameters) -> String {
        let defines = parameters.defines(for: program).sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" }
        return (["-cl-std=CL1.2"] + defines).joined(separator: " ")
    }
}
