import Foundation

/// What a device's tensors may still take, as data: the model's size is checked against it
/// before anything is allocated (`MemoryEstimate`).
public struct DeviceMemory: Sendable, Equatable {
    /// Devices with the same pool draw on the same memory (the CPU's parts share the host's;
    /// sub-devices share their parent's).
    public var pool: String
    /// Bytes free for new tensors now.
    public var freeBytes: UInt64
    /// The largest single tensor the device allows (nil: no limit but `freeBytes`).
    public var largestAllocationBytes: UInt64?
    /// Where `freeBytes` comes from, for messages (e.g. "MemAvailable in /proc/meminfo").
    public var source: String

    /// The host's memory available to new allocations: `MemAvailable` of /proc/meminfo (what
    /// the kernel can give without swapping), else the physical memory.
    public static func host() -> DeviceMemory {
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let kilobytes = meminfoField("MemAvailable", in: text)
        {
            return DeviceMemory(
                pool: "host", freeBytes: kilobytes * 1024, largestAllocationBytes: nil,
                source: "MemAvailable in /proc/meminfo")
        }
        return DeviceMemory(
            pool: "host", freeBytes: ProcessInfo.processInfo.physicalMemory,
            largestAllocationBytes: nil, source: "physical memory")
    }

    /// The value of `field` (kB) in /proc/meminfo's text.
    static func meminfoField(_ field: String, in text: String) -> UInt64? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") })
        else { return nil }
        return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
    }
}
