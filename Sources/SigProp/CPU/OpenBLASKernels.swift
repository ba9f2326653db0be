import CBLAS
import Foundation

/// Which of OpenBLAS's kernel sets this process runs, and a faster set this CPU supports when
/// OpenBLAS chose worse.
///
/// A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from the CPU's model number when it
/// loads. Debian 12's 0.3.21 does not know newer models and falls back to its SSE3 kernels
/// ("Prescott"), several times slower than its AVX-512 ("SkylakeX") kernels on such a CPU
/// (docs/performance.md). `OPENBLAS_CORETYPE` overrides the choice, but is read only while the library
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

    /// A kernel set of a DYNAMIC_ARCH OpenBLAS on x86-64: its name as `OPENBLAS_CORETYPE` takes
    /// it and `openblas_get_corename` returns it, its widest vectors, and the `/proc/cpuinfo`
    /// flags of the instructions its kernels use (a CPU without them faults in the kernels).
    struct KernelSet: Sendable {
        let name: String
        let vectors: VectorLevel
        let flags: Set<String>
    }

    static let avx512Flags: Set<String> = [
        "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
    ]

    /// OpenBLAS's x86-64 kernel sets, oldest first. Names not listed (other architectures) are
    /// never replaced, nor checked against the CPU. The AMD sets before Zen use FMA4, XOP,
    /// SSE4a or 3DNow!, which Intel CPUs (and Zen) lack.
    static let kernelSets: [KernelSet] = [
        KernelSet(name: "Prescott", vectors: .sse, flags: ["pni"]),
        KernelSet(name: "Core2", vectors: .sse, flags: ["pni", "ssse3"]),
        KernelSet(name: "Penryn", vectors: .sse, flags: ["pni", "ssse3", "sse4_1"]),
        KernelSet(name: "Dunnington", vectors: .sse, flags: ["pni", "ssse3", "sse4_1"]),
        KernelSet(name: "Nehalem", vectors: .sse, flags: ["pni", "ssse3", "sse4_1", "sse4_2"]),
        KernelSet(name: "Atom", vectors: .sse, flags: ["pni", "ssse3"]),
        KernelSet(name: "Nano", vectors: .sse, flags: ["pni", "ssse3"]),
        KernelSet(name: "Opteron", vectors: .sse, flags: ["3dnow"]),
        KernelSet(name: "Opteron_SSE3", vectors: .sse, flags: ["pni", "3dnow"]),
        KernelSet(name: "Barcelona", vectors: .sse, flags: ["pni", "sse4a"]),
        KernelSet(name: "Bobcat", vectors: .sse, flags: ["pni", "ssse3", "sse4a"]),
        KernelSet(name: "Sandybridge", vectors: .avx, flags: ["avx"]),
        KernelSet(name: "Bulldozer", vectors: .avx, flags: ["avx", "fma4", "xop"]),
        KernelSet(name: "Piledriver", vectors: .avx, flags: ["avx", "fma", "fma4", "xop"]),
        KernelSet(name: "Steamroller", vectors: .avx, flags: ["avx", "fma", "fma4", "xop"]),
        KernelSet(name: "Excavator", vectors: .avx2, flags: ["avx2", "fma", "fma4", "xop"]),
        KernelSet(name: "Haswell", vectors: .avx2, flags: ["avx", "avx2", "fma"]),
        KernelSet(name: "Zen", vectors: .avx2, flags: ["avx", "avx2", "fma"]),
        KernelSet(name: "SkylakeX", vectors: .avx512, flags: avx512Flags),
        KernelSet(name: "Cooperlake", vectors: .avx512, flags: avx512Flags.union(["avx512_bf16"])),
        KernelSet(
            name: "SapphireRapids", vectors: .avx512,
            flags: avx512Flags.union(["avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"])),
    ]

    /// The kernel set OpenBLAS calls `name` (any case), if the table has it.
    static func kernelSet(named name: String) -> KernelSet? {
        kernelSets.first { $0.name.lowercased() == name.lowercased() }
    }

    /// The kernel sets whose instructions a CPU with these flags has (OPENBLAS_CORETYPE values
    /// for it, if this OpenBLAS has them).
    static func kernelSets(runningOn cpuFlags: Set<String>) -> [String] {
        kernelSets.filter { $0.flags.isSubset(of: cpuFlags) }.map(\.name)
    }

    /// The kernel sets this CPU runs (`/proc/cpuinfo`), oldest first; empty off x86-64.
    public static var kernelSetsForThisCPU: [String] { kernelSets(runningOn: cpuFlags()) }

    enum VectorLevel: Int, Comparable {
        case sse, avx, avx2, avx512
        static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

        /// The OpenBLAS core type whose kernels use these vectors (any CPU with the features runs
        /// them).
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
            if avx512Flags.isSubset(of: flags) {
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
        guard !cpuFlags.isEmpty, let level = kernelSet(named: core)?.vectors else { return nil }
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

    /// Refuses an `OPENBLAS_CORETYPE` that OpenBLAS did not take (a name it does not know, or
    /// a build that ignores the variable: either way it runs other kernels without a word) or
    /// whose instructions this CPU lacks (its kernels would fault), naming the kernel sets this
    /// CPU runs. Unset (or empty, which OpenBLAS ignores), there is nothing to check.
    public static func checkChosenCore(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws {
        guard let requested = environment[variable], !requested.isEmpty else { return }
        let config = String(cString: openblas_get_config())
        if let problem = problem(
            requested: requested, running: runningCore, cpuFlags: cpuFlags(),
            version: config.split(separator: " ").prefix(2).joined(separator: " "),
            dynamic: config.contains("DYNAMIC_ARCH"))
        {
            throw SigPropError.configuration(problem)
        }
    }

    /// Why `requested` cannot stand when OpenBLAS (`version`) runs `running`, or nil.
    static func problem(
        requested: String, running: String, cpuFlags: Set<String>, version: String, dynamic: Bool
    ) -> String? {
        let runs = kernelSets(runningOn: cpuFlags)
        let choices =
            runs.isEmpty
            ? "Unset \(variable) to keep OpenBLAS's choice."
            : "Kernel sets this CPU runs: \(runs.joined(separator: ", ")). Set one of them or "
                + "unset \(variable)."
        if !cpuFlags.isEmpty, let set = kernelSet(named: requested) {
            let missing = set.flags.subtracting(cpuFlags).sorted()
            if !missing.isEmpty {
                return "\(variable)=\(requested): OpenBLAS's \(set.name) kernels use instructions "
                    + "this CPU lacks (\(missing.joined(separator: ", "))). \(choices)"
            }
        }
        guard requested.lowercased() != running.lowercased() else { return nil }
        guard dynamic else {
            return "\(variable)=\(requested): \(version) is built for its \(running) kernels "
                + "alone and ignores \(variable). Unset it."
        }
        return "\(variable)=\(requested) is not a kernel set of \(version), which runs its "
            + "\(running) kernels instead. \(choices)"
    }

    /// What to tell the user when `faster` is set.
    public var advice: String? {
        faster.map {
            "OpenBLAS runs its \(core) kernels, but this CPU runs its \($0) ones (OpenBLAS chose "
                + "by CPU model and does not know this one): "
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
            "note: OpenBLAS chose its \(kernels.core) kernels for this CPU, which runs its "
            + "\(faster) ones; "
            + "restarting with \(variable)=\(faster) (set \(variable) yourself to choose)\n"
        FileHandle.standardError.write(Data(note.utf8))
        setenv(variable, faster, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when the exec failed; the variable stays set, so nothing loops.
        let warning =
            "warning: could not restart (\(String(cString: strerror(errno)))); CPU products keep "
            + "OpenBLAS's \(kernels.core) kernels\n"
        FileHandle.standardError.write(Data(warning.utf8))
    }
}
