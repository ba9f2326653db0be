import CBLAS
import Foundation

/// Which of OpenBLAS's kernel sets this process runs, and a faster set this CPU supports when
/// OpenBLAS chose worse.
///
/// A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from the CPU's model number when it
/// loads. Debian 12's 0.3.21 does not know newer models and falls back to its SSE3 kernels
/// ("Prescott"): on an Emerald Rapids VM (family 6, model 207) that ran a 1024³ product at
/// 22-33 GFLOP/s against 130-290 with its AVX-512 ("SkylakeX") kernels (README, OpenBLAS's
/// kernels). `OPENBLAS_CORETYPE` overrides the choice, but is read only while the library
/// loads, before any Swift code runs: so `train` restarts itself with it set
/// (`restartWithFasterKernelsIfNeeded`), and a program using the library gets a warning from
/// `BackendSelection.makeDevices`.
public struct OpenBLASKernels: Sendable, Equatable {
    public static let variable = "OPENBLAS_CORETYPE"

    /// OpenBLAS's name for the kernels in use (`openblas_get_corename`), e.g. "Haswell".
    public let core: String
    /// A kernel set with wider vectors that this CPU runs, when OpenBLAS chose a narrower one,
    /// can be told otherwise (DYNAMIC_ARCH) and the user has not set `OPENBLAS_CORETYPE`.
    public let faster: String?

    /// The kernels this process runs, judged against the CPU's features (`/proc/cpuinfo`).
    public static func current(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> OpenBLASKernels
    {
        let core = runningCore
        guard environment[variable] == nil else { return OpenBLASKernels(core: core, faster: nil) }
        return OpenBLASKernels(core: core, faster: fasterCoreForThisCPU(than: core))
    }

    /// OpenBLAS's name for the kernels in use, without judging them (no `/proc/cpuinfo` read).
    static var runningCore: String { String(cString: openblas_get_corename()) }

    /// A faster core type than `core` for this CPU, if this OpenBLAS can be told to use it.
    static func fasterCoreForThisCPU(than core: String) -> String? {
        guard String(cString: openblas_get_config()).contains("DYNAMIC_ARCH") else { return nil }
        return fasterCore(than: core, cpuFlags: cpuFlags())
    }

    /// The widest vectors of x86-64 kernel sets, by OpenBLAS core name (lowercased). Names not
    /// listed (other architectures, cores this table does not know) are never replaced.
    static let vectorLevels: [String: VectorLevel] = [
        "prescott": .sse, "katmai": .sse, "coppermine": .sse, "northwood": .sse, "banias": .sse,
        "atom": .sse,
        "core2": .sse, "penryn": .sse, "dunnington": .sse, "nehalem": .sse, "athlon": .sse,
        "opteron": .sse,
        "opteron_sse3": .sse, "barcelona": .sse, "nano": .sse, "bobcat": .sse,
        "sandybridge": .avx, "bulldozer": .avx, "piledriver": .avx,
        "haswell": .avx2, "steamroller": .avx2, "excavator": .avx2, "zen": .avx2,
        "skylakex": .avx512, "cooperlake": .avx512, "sapphirerapids": .avx512,
    ]

    enum VectorLevel: Int, Comparable {
        case sse, avx, avx2, avx512
        static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

        /// The OpenBLAS core type whose kernels use these vectors (any CPU with the features runs them).
        var core: String {
            switch self {
            case .sse: "Prescott"
            case .avx: "Sandybridge"
            case .avx2: "Haswell"
            case .avx512: "SkylakeX"
            }
        }

        /// The widest level `flags` (as `/proc/cpuinfo` spells them) support.
        init(cpuFlags flags: Set<String>) {
            if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(
                flags.contains)
            {
                self = .avx512
            } else if flags.contains("avx2") && flags.contains("fma") {
                self = .avx2
            } else if flags.contains("avx") {
                self = .avx
            } else {
                self = .sse
            }
        }
    }

    /// The core type to ask for instead of `core`, or nil when `core` is unknown here or
    /// already uses the widest vectors the flags allow.
    static func fasterCore(than core: String, cpuFlags: Set<String>) -> String? {
        guard !cpuFlags.isEmpty, let level = vectorLevels[core.lowercased()] else { return nil }
        let supported = VectorLevel(cpuFlags: cpuFlags)
        return supported > level ? supported.core : nil
    }

    /// The first processor's feature flags from `/proc/cpuinfo` (empty where there is none).
    static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
            let colon = line.firstIndex(of: ":")
        else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// What to tell the user when `faster` is set.
    public var advice: String? {
        faster.map {
            "OpenBLAS runs its \(core) kernels, but this CPU runs its \($0) ones (OpenBLAS chose by CPU model and does not know this one): "
                + "set \(Self.variable)=\($0) for CPU products several times faster"
        }
    }

    /// Replaces this process with itself under `OPENBLAS_CORETYPE=<faster>` when `current()`
    /// finds faster kernels, saying so on standard error; returns otherwise (also when the exec
    /// fails, after a warning). Call before any other work: the process starts over.
    public static func restartWithFasterKernelsIfNeeded() {
        let kernels = current()
        guard let faster = kernels.faster else { return }
        let note =
            "note: OpenBLAS chose its \(kernels.core) kernels for this CPU, which runs its \(faster) ones; "
            + "restarting with \(variable)=\(faster) (set \(variable) yourself to choose)\n"
        FileHandle.standardError.write(Data(note.utf8))
        setenv(variable, faster, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when the exec failed; the variable stays set, so nothing loops.
        let warning =
            "warning: could not restart (\(String(cString: strerror(errno)))); CPU products keep OpenBLAS's \(kernels.core) kernels\n"
        FileHandle.standardError.write(Data(warning.utf8))
    }
}
