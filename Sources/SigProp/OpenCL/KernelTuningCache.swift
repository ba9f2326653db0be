import Foundation

/// Where a device's kernel parameters came from (`doctor` prints it).
public enum KernelParameterOrigin: Sendable, Equatable, CustomStringConvertible {
    /// `KernelParameters.forDevice`: the per-device table.
    case table
    /// An entry of the tuning cache for this device's name and driver version.
    case tuningCache(file: String)
    /// Set by the caller: a candidate of a tuning run.
    case tuningCandidate

    public var description: String {
        switch self {
        case .table: "the per-device table"
        case .tuningCache(let file): "the tuning cache \(file)"
        case .tuningCandidate: "a tuning candidate"
        }
    }
}

/// Tuned gemm parameters, one entry per device name + driver version + platform, in one JSON
/// file for the whole machine (`swift run -c release doctor --tune` writes it). A new driver
/// version is a new key: its code generation may favour other tiles.
public struct KernelTuningCache: Sendable {
    /// Bump when `KernelParameters` gains, loses or changes a field: files of another format
    /// are ignored (with a warning) until the tuner runs again.
    static let formatVersion = 2

    public static let tuningVariable = "SIGPROP_TUNING"
    public static let fileVariable = "SIGPROP_TUNING_CACHE"

    struct Entry: Codable, Equatable, Sendable {
        var platform: String
        var device: String
        var driver: String
        var parameters: KernelParameters
        /// The tuning run's figures over its shapes, for people reading the file.
        var tunedGFLOPS: Double
        var tableGFLOPS: Double?
        var tunedAt: String

        init(
            for info: OpenCLDeviceInfo, parameters: KernelParameters, tunedGFLOPS: Double,
            tableGFLOPS: Double?, tunedAt: Date = Date()
        ) {
            (platform, device, driver) = (info.platformName, info.name, info.driverVersion)
            self.parameters = parameters
            self.tunedGFLOPS = tunedGFLOPS
            self.tableGFLOPS = tableGFLOPS
            self.tunedAt = ISO8601DateFormatter().string(from: tunedAt)
        }

        var key: [String] { [platform, device, driver] }
        static func key(of info: OpenCLDeviceInfo) -> [String] {
            [info.platformName, info.name, info.driverVersion]
        }
    }

    private struct Contents: Codable {
        var format: Int
        var entries: [Entry]
    }

    /// Read first, on its own, so a file of another format is named as such.
    private struct FormatOnly: Decodable { var format: Int }

    public let file: URL
    var entries: [Entry]

    init(file: URL, entries: [Entry] = []) {
        self.file = file
        self.entries = entries
    }

    /// The cache file the environment names: `SIGPROP_TUNING_CACHE`, else
    /// `$XDG_CACHE_HOME/sigprop/kernel-tuning.json`, else
    /// `$HOME/.cache/sigprop/kernel-tuning.json`. nil with `SIGPROP_TUNING=off` (the table only),
    /// or when none of them is set.
    public static func file(environment: [String: String]) throws -> URL? {
        switch environment[tuningVariable]?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        {
        case "", "on": break
        case "off": return nil
        default:
            throw SigPropError.configuration(
                "\(tuningVariable)=\(environment[tuningVariable] ?? "") is not a setting. Valid "
                    + "values: on, off (default on; off ignores the kernel tuning cache)"
            )
        }
        func nonEmpty(_ name: String) -> String? {
            environment[name].flatMap { $0.isEmpty ? nil : $0 }
        }
        if let path = nonEmpty(fileVariable) { return URL(fileURLWithPath: path) }
        let folder =
            nonEmpty("XDG_CACHE_HOME").map { URL(fileURLWithPath: $0) }
            ?? nonEmpty("HOME").map { URL(fileURLWithPath: $0).appendingPathComponent(".cache") }
        return folder?.appendingPathComponent("sigprop").appendingPathComponent(
            "kernel-tuning.json")
    }

    /// The entries of `file`: none when it does not exist; when it cannot be read or parsed (or
    /// has another format), none and a warning naming the file and the fix. A bad cache must
    /// not stop training: the table always works.
    public static func load(_ file: URL) -> (cache: KernelTuningCache, warning: String?) {
        guard FileManager.default.fileExists(atPath: file.path) else {
            return (KernelTuningCache(file: file), nil)
        }
        func unusable(_ problem: String) -> (KernelTuningCache, String?) {
            (
                KernelTuningCache(file: file),
                "kernel tuning cache \(file.path) \(problem); using the per-device table. Delete "
                    + "the file, or run `swift run -c release doctor --tune` to write it again "
                    + "(\(tuningVariable)=off ignores it)."
            )
        }
        let data: Data
        do { data = try Data(contentsOf: file) } catch {
            return unusable("cannot be read (\(error.localizedDescription))")
        }
        do {
            let decoder = JSONDecoder()
            let format = try decoder.decode(FormatOnly.self, from: data).format
            guard format == formatVersion else {
                return unusable("has format \(format) (this SigProp reads format \(formatVersion))")
            }
            return (
                KernelTuningCache(
                    file: file, entries: try decoder.decode(Contents.self, from: data).entries), nil
            )
        } catch {
            return unusable("cannot be parsed (\(reason(error)))")
        }
    }

    /// A decoding error in a line: what, and where in the file's structure.
    private static func reason(_ error: Error) -> String {
        let context: DecodingError.Context
        switch error as? DecodingError {
        case .dataCorrupted(let c), .keyNotFound(_, let c), .typeMismatch(_, let c),
            .valueNotFound(_, let c):
            context = c
        default: return "\(error)"
        }
        let path = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(
            separator: ".")
        return context.debugDescription + (path.isEmpty ? "" : " at \(path)")
    }

    func entry(for info: OpenCLDeviceInfo) -> Entry? {
        entries.first { $0.key == Entry.key(of: info) }
    }

    /// The device's parameters: this cache's entry for its exact name, driver version and
    /// platform where that entry fits the device's limits; else the table.
    func parameters(for info: OpenCLDeviceInfo) -> (
        parameters: KernelParameters, origin: KernelParameterOrigin
    ) {
        if let tuned = entry(for: info)?.parameters, tuned.fits(info) {
            return (tuned, .tuningCache(file: file.path))
        }
        return (KernelParameters.forDevice(info), .table)
    }

    /// Adds `entry` (replacing the one of its device) to the file as it is now, keeping other
    /// devices' entries; an unusable file is replaced. Written atomically (`AtomicFile`).
    static func record(_ entry: Entry, in file: URL) throws {
        var cache = load(file).cache
        cache.entries.removeAll { $0.key == entry.key }
        cache.entries.append(entry)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(Contents(format: formatVersion, entries: cache.entries))
        do {
            try AtomicFile.write(data, to: file)
        } catch .folder(let path, let reason) {
            throw SigPropError.configuration(
                "cannot create the folder \(path) of the kernel tuning cache: \(reason). Set "
                    + "\(fileVariable) to a writable path"
            )
        } catch .temporary(let path, let reason) {
            throw SigPropError.configuration(
                "cannot write \(path): \(reason). Set \(fileVariable) to a writable path")
        } catch .write(let reason) {
            throw SigPropError.configuration(
                "writing the kernel tuning cache \(file.path) failed: \(reason) (the previous "
                    + "file is untouched)"
            )
        }
    }
}
