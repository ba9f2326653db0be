import Foundation

/// Chooses the device from `SIGPROP_BACKEND` and `SIGPROP_DEVICE`.
///
/// - `SIGPROP_BACKEND=auto` (default): the device named by `SIGPROP_DEVICE` if set, else the
///   first OpenCL GPU, else the CPU fallback. An OpenCL failure falls back to the CPU with a
///   warning.
/// - `opencl`: any OpenCL device (PoCL on a CPU included); `SIGPROP_DEVICE` or the first.
/// - `cpu`: the CPU fallback.
///
/// `SIGPROP_DEVICE` is an index into the OpenCL device list (as `doctor` prints it) or a
/// case-insensitive substring of a device name.
public struct BackendSelection: Sendable {
    public enum Choice: String, Sendable, CaseIterable { case auto, opencl, cpu }

    public let choice: Choice
    public let deviceSelector: String?

    public static let backendVariable = "SIGPROP_BACKEND"
    public static let deviceVariable = "SIGPROP_DEVICE"

    /// Parses the variables; an unknown backend is an error listing the valid values.
    public init(environment: [String: String]) throws {
        let raw = environment[Self.backendVariable]?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard let choice = raw.isEmpty ? .auto : Choice(rawValue: raw) else {
            throw SigPropError.configuration(
                "\(Self.backendVariable)=\(environment[Self.backendVariable] ?? "") is not a backend. Valid values: \(Choice.allCases.map(\.rawValue).joined(separator: ", ")) (default auto).")
        }
        if choice == .cpu, let selector = environment[Self.deviceVariable], !selector.isEmpty {
            throw SigPropError.configuration(
                "\(Self.deviceVariable)=\(selector) selects an OpenCL device, but \(Self.backendVariable)=cpu. Unset \(Self.deviceVariable) or use \(Self.backendVariable)=opencl or auto.")
        }
        self.choice = choice
        let selector = environment[Self.deviceVariable]?.trimmingCharacters(in: .whitespaces)
        self.deviceSelector = (selector?.isEmpty ?? true) ? nil : selector
    }

    /// The device chosen, and warnings to show the user (an OpenCL fallback under `auto`).
    public func makeDevice(
        discover: () throws -> [OpenCLDeviceEntry] = OpenCLDiscovery.allDevices
    ) throws -> (device: Device, warnings: [String]) {
        switch choice {
        case .cpu:
            return (try Device.cpu(), [])
        case .opencl:
            let entries = try discover()
            guard !entries.isEmpty else {
                throw SigPropError.configuration(
                    "\(Self.backendVariable)=opencl but no OpenCL device was found. Install a driver (apt-get install pocl-opencl-icd runs OpenCL on the CPU) or use \(Self.backendVariable)=cpu.")
            }
            let entry = try deviceSelector.map { try Self.select($0, from: entries) } ?? entries[0]
            return (try Device.opencl(entry), [])
        case .auto:
            do {
                let entries = try discover()
                if let deviceSelector {
                    return (try Device.opencl(try Self.select(deviceSelector, from: entries)), [])
                }
                if let gpu = entries.first(where: { $0.info.kind == .gpu }) {
                    return (try Device.opencl(gpu), [])
                }
                return (try Device.cpu(), [])
            } catch let error as SigPropError {
                throw error  // a bad SIGPROP_DEVICE is the user's to fix, not a reason to fall back
            } catch {
                return (try Device.cpu(), ["OpenCL could not be initialised (\(error)); using the CPU fallback. Set \(Self.backendVariable)=cpu to silence this, or \(Self.backendVariable)=opencl to make it an error."])
            }
        }
    }

    /// The entry `selector` names: an index into `entries`, or a name substring matching one device.
    static func select(_ selector: String, from entries: [OpenCLDeviceEntry]) throws -> OpenCLDeviceEntry {
        let listing = entries.isEmpty
            ? "No OpenCL device was found."
            : "Devices found:\n" + entries.enumerated().map { "  \($0.offset): \($0.element.info)" }.joined(separator: "\n")
        if let index = Int(selector) {
            guard entries.indices.contains(index) else {
                throw SigPropError.configuration("\(deviceVariable)=\(selector) is not a device index (0..<\(entries.count)). \(listing)")
            }
            return entries[index]
        }
        let matches = entries.filter { $0.info.name.lowercased().contains(selector.lowercased()) }
        switch matches.count {
        case 1: return matches[0]
        case 0: throw SigPropError.configuration("\(deviceVariable)=\(selector) matches no OpenCL device name. Give an index or part of a name. \(listing)")
        default: throw SigPropError.configuration("\(deviceVariable)=\(selector) matches \(matches.count) devices; give an index or a longer name. \(listing)")
        }
    }
}

