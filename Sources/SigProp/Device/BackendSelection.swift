import Foundation

/// Chooses the devices from `SIGPROP_BACKEND`, `SIGPROP_DEVICE` and `SIGPROP_SPLIT`.
///
/// - `SIGPROP_BACKEND=auto` (default): the devices named by `SIGPROP_DEVICE` if set, else the
///   first OpenCL GPU, else the CPU fallback. An OpenCL failure falls back to the CPU with a
///   warning.
/// - `opencl`: OpenCL devices (PoCL on a CPU included); `SIGPROP_DEVICE`'s or the first.
/// - `cpu`: the CPU fallback.
///
/// `SIGPROP_DEVICE` is an index into the OpenCL device list (as `doctor` prints it) or a
/// case-insensitive substring of a device name, or several of them separated by commas.
/// `SIGPROP_SPLIT=N` divides each device into N equal devices (OpenCL sub-devices from
/// `clCreateSubDevices`; on the CPU, N devices of cores/N cores). With several devices the
/// network's blocks are placed on them in contiguous groups of balanced work.
///
/// `SIGPROP_FUSED_UPDATE=auto|on|off` chooses how dense weights learn: the optimizer step in
/// the weight-gradient product's epilogue (`Device.updateWeights`), or the product and then the
/// optimizer kernel; `auto` (default) takes `capabilities.fusedWeightUpdate` (OpenCL GPUs).
///
/// OpenCL devices take their kernel parameters from the tuning cache (`KernelTuningCache.file`:
/// `SIGPROP_TUNING_CACHE`, else under `XDG_CACHE_HOME` or `HOME`) where it has an entry for the
/// device, else from the table; `SIGPROP_TUNING=off` ignores the cache.
public struct BackendSelection: Sendable {
    public enum Choice: String, Sendable, CaseIterable { case auto, opencl, cpu }

    public let choice: Choice
    /// `SIGPROP_DEVICE`'s entries, in order (empty: the default device).
    public let deviceSelectors: [String]
    /// `SIGPROP_SPLIT`: parts each device is divided into (1: none).
    public let split: Int
    /// Where tuned kernel parameters are read (nil: the table only).
    public let tuningCacheFile: URL?
    /// `SIGPROP_FUSED_UPDATE`: fused weight updates on or off on every device (nil: each device's
    /// default).
    public let fusedUpdate: Bool?

    public static let backendVariable = "SIGPROP_BACKEND"
    public static let deviceVariable = "SIGPROP_DEVICE"
    public static let splitVariable = "SIGPROP_SPLIT"
    public static let fusedUpdateVariable = "SIGPROP_FUSED_UPDATE"

    /// Parses the variables; an unknown backend is an error listing the valid values.
    public init(environment: [String: String]) throws {
        let raw =
            environment[Self.backendVariable]?.trimmingCharacters(in: .whitespaces).lowercased()
            ?? ""
        guard let choice = raw.isEmpty ? .auto : Choice(rawValue: raw) else {
            throw SigPropError.configuration(
                "\(Self.backendVariable)=\(environment[Self.backendVariable] ?? "") is not a "
                    + "backend. Valid values: "
                    + "\(Choice.allCases.map(\.rawValue).joined(separator: ", ")) (default "
                    + "auto)."
            )
        }
        if choice == .cpu, let selector = environment[Self.deviceVariable], !selector.isEmpty {
            throw SigPropError.configuration(
                "\(Self.deviceVariable)=\(selector) selects an OpenCL device, but "
                    + "\(Self.backendVariable)=cpu. Unset \(Self.deviceVariable) or use "
                    + "\(Self.backendVariable)=opencl or auto."
            )
        }
        self.choice = choice
        let rawSelectors =
            environment[Self.deviceVariable]?.trimmingCharacters(in: .whitespaces) ?? ""
        let selectors =
            rawSelectors.isEmpty
            ? []
            : rawSelectors.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        if selectors.contains(where: \.isEmpty) {
            throw SigPropError.configuration(
                "\(Self.deviceVariable)=\(environment[Self.deviceVariable] ?? "") has an empty "
                    + "entry: give indices or names separated by commas, e.g. 0,1"
            )
        }
        deviceSelectors = selectors
        let splitText = environment[Self.splitVariable]?.trimmingCharacters(in: .whitespaces) ?? ""
        guard let split = splitText.isEmpty ? 1 : Int(splitText), split >= 1 else {
            throw SigPropError.configuration(
                "\(Self.splitVariable)=\(splitText) is not a number of parts: give an integer >= "
                    + "1 (2 divides each device into two equal devices)"
            )
        }
        self.split = split
        switch environment[Self.fusedUpdateVariable]?.trimmingCharacters(in: .whitespaces)
            .lowercased() ?? ""
        {
        case "", "auto": fusedUpdate = nil
        case "on": fusedUpdate = true
        case "off": fusedUpdate = false
        default:
            throw SigPropError.configuration(
                "\(Self.fusedUpdateVariable)=\(environment[Self.fusedUpdateVariable] ?? "") is "
                    + "not a choice. Valid values: auto (default: the device's), on, off."
            )
        }
        tuningCacheFile = try KernelTuningCache.file(environment: environment)
    }

    /// The devices chosen (one unless `SIGPROP_DEVICE` lists several or `SIGPROP_SPLIT` divides
    /// them), and warnings to show the user (an OpenCL fallback under `auto`).
    public func makeDevices(
        discover: () throws -> [OpenCLDeviceEntry] = OpenCLDiscovery.allDevices
    ) throws -> (devices: [Device], warnings: [String]) {
        let made = try makeDevicesByChoice(discover: discover)
        if let fusedUpdate {
            for device in made.devices { device.fusesWeightUpdates = fusedUpdate }
        }
        return made
    }

    private func makeDevicesByChoice(discover: () throws -> [OpenCLDeviceEntry]) throws -> (
        devices: [Device], warnings: [String]
    ) {
        switch choice {
        case .cpu:
            return try cpuDevices()
        case .opencl:
            let entries = try discover()
            guard !entries.isEmpty else {
                throw SigPropError.configuration(
                    "\(Self.backendVariable)=opencl but no OpenCL device was found. Install a "
                        + "driver (apt-get install pocl-opencl-icd runs OpenCL on the CPU) or "
                        + "use \(Self.backendVariable)=cpu."
                )
            }
            return try openCLDevices(try selected(from: entries) ?? [entries[0]])
        case .auto:
            do {
                let entries = try discover()
                if let chosen = try selected(from: entries) { return try openCLDevices(chosen) }
                if let gpu = entries.first(where: { $0.info.kind == .gpu }) {
                    return try openCLDevices([gpu])
                }
                return try cpuDevices()
            } catch let error as SigPropError {
                // A bad SIGPROP_DEVICE or SIGPROP_SPLIT is the user's to fix, not a reason to fall
                // back.
                throw error
            } catch {
                let (devices, warnings) = try cpuDevices()
                return (
                    devices,
                    [
                        "OpenCL could not be initialised (\(error)); using the CPU fallback. Set "
                            + "\(Self.backendVariable)=cpu to silence this, or "
                            + "\(Self.backendVariable)=opencl to make it an error."
                    ] + warnings
                )
            }
        }
    }

    /// The entries `SIGPROP_DEVICE` names, or nil when it is unset.
    public func selected(from entries: [OpenCLDeviceEntry]) throws -> [OpenCLDeviceEntry]? {
        guard !deviceSelectors.isEmpty else { return nil }
        let chosen = try deviceSelectors.map { try Self.select($0, from: entries) }
        guard Set(chosen.map(\.id)).count == chosen.count else {
            throw SigPropError.configuration(
                "\(Self.deviceVariable)=\(deviceSelectors.joined(separator: ",")) names a device "
                    + "twice; to run several parts of one device use \(Self.splitVariable)=N"
            )
        }
        return chosen
    }

    /// The devices, and the tuning cache's warning if it cannot be used (read once for all).
    func openCLDevices(_ entries: [OpenCLDeviceEntry]) throws -> (
        devices: [Device], warnings: [String]
    ) {
        let (cache, warning) = tuningCache()
        let devices = try entries.flatMap { try $0.split(into: split) }.map {
            try Device.opencl($0, tuningCache: cache)
        }
        return (devices, warning.map { [$0] } ?? [])
    }

    /// The tuning cache's contents, or nil under `SIGPROP_TUNING=off`; a warning if the file is
    /// unusable.
    public func tuningCache() -> (cache: KernelTuningCache?, warning: String?) {
        guard let tuningCacheFile else { return (nil, nil) }
        return KernelTuningCache.load(tuningCacheFile)
    }

    /// The CPU devices, and the advice of `OpenBLASKernels` if OpenBLAS runs slower kernels
    /// than the CPU allows.
    func cpuDevices() throws -> (devices: [Device], warnings: [String]) {
        let cores = CPUBackend.allowedCores
        guard split <= cores else {
            throw SigPropError.configuration(
                "\(Self.splitVariable)=\(split) cannot divide the CPU's \(cores) cores into "
                    + "\(split) devices: use 1...\(cores)"
            )
        }
        let devices =
            split > 1
            ? try (0..<split).map {
                try Device.cpu(cores: cores / split, part: "part \($0 + 1) of \(split)")
            }
            : [try Device.cpu()]
        return (devices, OpenBLASKernels.current().advice.map { [$0] } ?? [])
    }

    /// The entry `selector` names: an index into `entries`, or a name substring matching one
    /// device.
    static func select(_ selector: String, from entries: [OpenCLDeviceEntry]) throws
        -> OpenCLDeviceEntry
    {
        let listing =
            entries.isEmpty
            ? "No OpenCL device was found."
            : "Devices found:\n"
                + entries.enumerated().map { "  \($0.offset): \($0.element.info)" }.joined(
                    separator: "\n")
        if let index = Int(selector) {
            guard entries.indices.contains(index) else {
                throw SigPropError.configuration(
                    "\(deviceVariable)=\(selector) is not a device index (0..<\(entries.count)). "
                        + "\(listing)"
                )
            }
            return entries[index]
        }
        let matches = entries.filter { $0.info.name.lowercased().contains(selector.lowercased()) }
        switch matches.count {
        case 1: return matches[0]
        case 0:
            throw SigPropError.configuration(
                "\(deviceVariable)=\(selector) matches no OpenCL device name. Give an index or "
                    + "part of a name. \(listing)"
            )
        default:
            throw SigPropError.configuration(
                "\(deviceVariable)=\(selector) matches \(matches.count) devices; give an index or "
                    + "a longer name. \(listing)"
            )
        }
    }
}
