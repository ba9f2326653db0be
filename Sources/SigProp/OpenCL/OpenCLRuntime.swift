import COpenCL
import Foundation

// A thin, safe layer over the OpenCL 1.2 C API: each wrapper owns its handle and releases it
// in deinit; every status code becomes an `OpenCLError` naming the call.

/// What the package needs to know about one OpenCL device.
public struct OpenCLDeviceInfo: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case gpu = "GPU"
        case cpu = "CPU"
        case accelerator = "accelerator"
        case other
    }

    public let platformIndex: Int
    public let deviceIndex: Int
    public let platformName: String
    public let name: String
    public let vendor: String
    public let version: String
    public let driverVersion: String
    public let kind: Kind
    public internal(set) var computeUnits: Int
    public let globalMemoryBytes: UInt64
    public let localMemoryBytes: UInt64
    public let maxAllocationBytes: UInt64
    public let maxWorkGroupSize: Int
    public let extensions: [String]
    /// The most sub-devices `clCreateSubDevices` can make of it (0 or 1: it cannot be split;
    /// NVIDIA's driver, for one).
    public var maxSubDevices = 0
    /// For a sub-device: which part of its parent, e.g. "part 1 of 2".
    public var partition: String?

    public var description: String {
        "\(name)\(partition.map { " (\($0))" } ?? "") [\(kind.rawValue), \(platformName), "
            + "\(computeUnits) compute units]"
    }
}

enum OpenCLQuery {
    static func platforms() throws -> [cl_platform_id?] {
        var count: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &count)
        // The ICD loader reports "no platform" as an error; for enumeration it is an empty list.
        if status == -1001 || count == 0 { return [] }
        try clCheck(status, "clGetPlatformIDs")
        var ids = [cl_platform_id?](repeating: nil, count: Int(count))
        try clCheck(clGetPlatformIDs(count, &ids, nil), "clGetPlatformIDs")
        return ids
    }

    static func devices(of platform: cl_platform_id?) throws -> [cl_device_id?] {
        var count: cl_uint = 0
        let status = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &count)
        if status == CL_DEVICE_NOT_FOUND || count == 0 { return [] }
        try clCheck(status, "clGetDeviceIDs")
        var ids = [cl_device_id?](repeating: nil, count: Int(count))
        try clCheck(
            clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), count, &ids, nil),
            "clGetDeviceIDs")
        return ids
    }

    static func platformString(_ platform: cl_platform_id?, _ param: Int32) throws -> String {
        var size = 0
        try clCheck(
            clGetPlatformInfo(platform, cl_platform_info(param), 0, nil, &size), "clGetPlatformInfo"
        )
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(
            clGetPlatformInfo(platform, cl_platform_info(param), size, &bytes, nil),
            "clGetPlatformInfo")
        return String(
            decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func deviceString(_ device: cl_device_id?, _ param: Int32) throws -> String {
        var size = 0
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(param), 0, nil, &size), "clGetDeviceInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(param), size, &bytes, nil), "clGetDeviceInfo")
        return String(
            decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self
        )
        .trimmingCharacters(in: .whitespaces)
    }

    static func deviceValue<T: FixedWidthInteger>(
        _ device: cl_device_id?, _ param: Int32, as: T.Type
    ) throws -> T {
        var value: T = 0
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(param), MemoryLayout<T>.size, &value, nil),
            "clGetDeviceInfo")
        return value
    }

    static func info(
        platformIndex: Int, platform: cl_platform_id?, deviceIndex: Int, device: cl_device_id?
    ) throws -> OpenCLDeviceInfo {
        let type = try deviceValue(device, CL_DEVICE_TYPE, as: cl_device_type.self)
        let kind: OpenCLDeviceInfo.Kind =
            type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0
            ? .gpu
            : type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0
                ? .cpu
                : type & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 ? .accelerator : .other
        return OpenCLDeviceInfo(
            platformIndex: platformIndex,
            deviceIndex: deviceIndex,
            platformName: try platformString(platform, CL_PLATFORM_NAME),
            name: try deviceString(device, CL_DEVICE_NAME),
            vendor: try deviceString(device, CL_DEVICE_VENDOR),
            version: try deviceString(device, CL_DEVICE_VERSION),
            driverVersion: try deviceString(device, CL_DRIVER_VERSION),
            kind: kind,
            computeUnits: Int(
                try deviceValue(device, CL_DEVICE_MAX_COMPUTE_UNITS, as: cl_uint.self)),
            globalMemoryBytes: try deviceValue(
                device, CL_DEVICE_GLOBAL_MEM_SIZE, as: cl_ulong.self),
            localMemoryBytes: try deviceValue(device, CL_DEVICE_LOCAL_MEM_SIZE, as: cl_ulong.self),
            maxAllocationBytes: try deviceValue(
                device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, as: cl_ulong.self),
            maxWorkGroupSize: Int(
                try deviceValue(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, as: Int.self)),
            extensions: try deviceString(device, CL_DEVICE_EXTENSIONS).split(separator: " ").map(
                String.init),
            maxSubDevices: Int(
                try deviceValue(device, CL_DEVICE_PARTITION_MAX_SUB_DEVICES, as: cl_uint.self))
        )
    }
}

/// One OpenCL device found on the machine, with its handle.
public struct OpenCLDeviceEntry: @unchecked Sendable {
    public let info: OpenCLDeviceInfo
    let id: cl_device_id?
    /// Releases a sub-device's handle when the last holder goes; a context made from the
    /// entry holds it too, so it outlives every queue and buffer of the context.
    let owner: SubDeviceHandle?

    init(info: OpenCLDeviceInfo, id: cl_device_id?, owner: SubDeviceHandle? = nil) {
        self.info = info
        self.id = id
        self.owner = owner
    }

    /// The device split into `parts` sub-devices of equal compute units
    /// (`clCreateSubDevices`, partition equally); `SIGPROP_SPLIT` uses it.
    public func split(into parts: Int) throws -> [OpenCLDeviceEntry] {
        guard parts >= 1, parts <= info.computeUnits else {
            throw SigPropError.configuration(
                "SIGPROP_SPLIT=\(parts) cannot split \(info.name) (\(info.computeUnits) compute "
                    + "units) into \(parts) equal parts: use 1...\(info.computeUnits)"
            )
        }
        guard parts > 1 else { return [self] }
        guard parts <= info.maxSubDevices else {
            throw SigPropError.configuration(
                "SIGPROP_SPLIT=\(parts): \(info.name) cannot be split into \(parts) devices (its "
                    + "driver offers \(info.maxSubDevices) sub-devices at most); unset "
                    + "SIGPROP_SPLIT."
            )
        }
        let unitsEach = info.computeUnits / parts
        var properties: [cl_device_partition_property] = [
            cl_device_partition_property(CL_DEVICE_PARTITION_EQUALLY),
            cl_device_partition_property(unitsEach), 0,
        ]
        var ids = [cl_device_id?](repeating: nil, count: parts)
        var made: cl_uint = 0
        let status = clCreateSubDevices(id, &properties, cl_uint(parts), &ids, &made)
        guard status == CL_SUCCESS else {
            let error = OpenCLError(
                code: status, call: "clCreateSubDevices",
                context: "\(parts) parts of \(unitsEach) compute units")
            throw SigPropError.configuration(
                "SIGPROP_SPLIT=\(parts): \(info.name) cannot be split (\(error)). Its driver may "
                    + "not support sub-devices; unset SIGPROP_SPLIT."
            )
        }
        return ids.prefix(Int(made)).enumerated().map { index, sub in
            var part = info
            part.partition = "part \(index + 1) of \(made)"
            part.computeUnits =
                (try? OpenCLQuery.deviceValue(sub, CL_DEVICE_MAX_COMPUTE_UNITS, as: cl_uint.self))
                .map(Int.init) ?? unitsEach
            return OpenCLDeviceEntry(info: part, id: sub, owner: SubDeviceHandle(sub))
        }
    }
}

final class SubDeviceHandle: @unchecked Sendable {
    let id: cl_device_id?
    init(_ id: cl_device_id?) { self.id = id }
    deinit { if let id { clReleaseDevice(id) } }
}

public enum OpenCLDiscovery {
    /// Every device of every platform, in platform order (not platform 0 only).
    public static func allDevices() throws -> [OpenCLDeviceEntry] {
        var entries: [OpenCLDeviceEntry] = []
        for (p, platform) in try OpenCLQuery.platforms().enumerated() {
            for (d, device) in try OpenCLQuery.devices(of: platform).enumerated() {
                let info = try OpenCLQuery.info(
                    platformIndex: p, platform: platform, deviceIndex: d, device: device)
                entries.append(OpenCLDeviceEntry(info: info, id: device))
            }
        }
        return entries
    }
}

/// A context over one device.
final class CLContext: @unchecked Sendable {
    let handle: cl_context
    let device: cl_device_id?
    /// Bytes of every buffer of this context still referenced from Swift.
    let memory = MemoryCounter()

    /// A sub-device's handle, released only after the context (drivers need the device alive
    /// for as long as its queues and buffers).
    private let deviceOwner: SubDeviceHandle?

    init(device: cl_device_id?, owner: SubDeviceHandle? = nil) throws {
        deviceOwner = owner
        var status: cl_int = 0
        var dev = device
        guard let context = clCreateContext(nil, 1, &dev, nil, nil, &status), status == CL_SUCCESS
        else {
            throw OpenCLError(
                code: status == CL_SUCCESS ? CL_INVALID_CONTEXT : status, call: "clCreateContext")
        }
        self.handle = context
        self.device = device
    }

    deinit { clReleaseContext(handle) }
}

/// An in-order command queue with profiling enabled (kernel spans for traces come from it).
final class CLQueue: @unchecked Sendable {
    let handle: cl_command_queue
    let context: CLContext

    init(context: CLContext) throws {
        var status: cl_int = 0
        let queue = clCreateCommandQueue(
            context.handle, context.device, cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE),
            &status)
        guard let queue, status == CL_SUCCESS else {
            throw OpenCLError(
                code: status == CL_SUCCESS ? CL_INVALID_COMMAND_QUEUE : status,
                call: "clCreateCommandQueue")
        }
        self.handle = queue
        self.context = context
    }

    /// Host copies of values being written without blocking, kept until their write completed.
    private var staged: [(event: CLEvent, copy: UnsafeMutableRawPointer)] = []
    private let stagedLock = NSLock()

    deinit {
        clFinish(handle)
        for entry in staged { entry.copy.deallocate() }
        clReleaseCommandQueue(handle)
    }

    /// Waits for the queue, then frees the host copies of completed writes. Only those: another
    /// thread sharing the queue may have enqueued a write since clFinish returned, and freeing
    /// its copy early lets the write read freed memory.
    func finish() throws {
        try clCheck(clFinish(handle), "clFinish")
        releaseStaged()
    }

    private func releaseStaged() {
        stagedLock.withLock {
            staged.removeAll { entry in
                guard entry.event.isComplete else { return false }
                entry.copy.deallocate()
                return true
            }
        }
    }

    /// An event that completes when everything enqueued so far has completed.
    func marker() throws -> CLEvent {
        var event: cl_event?
        try clCheck(
            clEnqueueMarkerWithWaitList(handle, 0, nil, &event), "clEnqueueMarkerWithWaitList")
        return CLEvent(event)
    }

    /// Later commands on this queue start after `events` complete; the host does not block.
    func barrier(waitingFor events: [CLEvent]) throws {
        guard !events.isEmpty else { return }
        var list = events.map { $0.handle }
        try clCheck(
            clEnqueueBarrierWithWaitList(handle, cl_uint(list.count), &list, nil),
            "clEnqueueBarrierWithWaitList")
    }

    /// Writes without blocking: a blocking write would make the host wait for all the queue's
    /// earlier work, which stalls a pipeline. The values go through a host copy that lives
    /// until the write completed.
    func write(_ buffer: CLBuffer, from pointer: UnsafeRawPointer, bytes: Int) throws {
        releaseStaged()
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        copy.copyMemory(from: pointer, byteCount: bytes)
        var event: cl_event?
        let status = clEnqueueWriteBuffer(
            handle, buffer.handle, cl_bool(CL_FALSE), 0, bytes, copy, 0, nil, &event)
        guard status == CL_SUCCESS else {
            copy.deallocate()
            throw OpenCLError(code: status, call: "clEnqueueWriteBuffer", context: "\(bytes) bytes")
        }
        stagedLock.withLock { staged.append((CLEvent(event), copy)) }
    }

    func read(_ buffer: CLBuffer, into pointer: UnsafeMutableRawPointer, bytes: Int) throws {
        try clCheck(
            clEnqueueReadBuffer(
                handle, buffer.handle, cl_bool(CL_TRUE), 0, bytes, pointer, 0, nil, nil),
            "clEnqueueReadBuffer", "\(bytes) bytes")
    }

    func copy(
        _ source: CLBuffer, at sourceOffset: Int = 0, to destination: CLBuffer,
        at destinationOffset: Int = 0, bytes: Int
    ) throws {
        try clCheck(
            clEnqueueCopyBuffer(
                handle, source.handle, destination.handle, sourceOffset, destinationOffset,
                bytes, 0, nil, nil),
            "clEnqueueCopyBuffer", "\(bytes) bytes")
    }

    /// Enqueues `kernel` over `global` work-items in groups of `local` (nil: the driver picks).
    @discardableResult
    func launch(_ kernel: CLKernel, global: [Int], local: [Int]? = nil) throws -> CLEvent {
        var event: cl_event?
        var globalSizes = global
        let status: cl_int
        if var localSizes = local {
            status = clEnqueueNDRangeKernel(
                handle, kernel.handle, cl_uint(global.count), nil, &globalSizes, &localSizes, 0,
                nil, &event)
        } else {
            status = clEnqueueNDRangeKernel(
                handle, kernel.handle, cl_uint(global.count), nil, &globalSizes, nil, 0, nil, &event
            )
        }
        try clCheck(
            status, "clEnqueueNDRangeKernel",
            "kernel \(kernel.name), global \(global), local \(local.map { "\($0)" } ?? "auto")")
        return CLEvent(event)
    }
}

/// A completion handle for enqueued work.
final class CLEvent: @unchecked Sendable {
    let handle: cl_event?

    init(_ handle: cl_event?) { self.handle = handle }

    deinit { if let handle { clReleaseEvent(handle) } }

    func wait() throws {
        var list = handle
        try clCheck(clWaitForEvents(1, &list), "clWaitForEvents")
    }

    /// The command finished (successfully or not).
    var isComplete: Bool {
        guard let handle else { return true }
        var status: cl_int = 0
        guard
            clGetEventInfo(
                handle, cl_event_info(CL_EVENT_COMMAND_EXECUTION_STATUS), MemoryLayout<cl_int>.size,
                &status, nil) == CL_SUCCESS
        else {
            return true
        }
        return status == CL_COMPLETE || status < 0
    }

    /// When the command started, in device nanoseconds (needs a profiling queue).
    func startNanoseconds() throws -> UInt64 {
        var value: cl_ulong = 0
        try clCheck(
            clGetEventProfilingInfo(
                handle, cl_profiling_info(CL_PROFILING_COMMAND_START), MemoryLayout<cl_ulong>.size,
                &value, nil),
            "clGetEventProfilingInfo")
        return UInt64(value)
    }

    /// When the command finished, in device nanoseconds (needs a profiling queue).
    func endNanoseconds() throws -> UInt64 {
        var value: cl_ulong = 0
        try clCheck(
            clGetEventProfilingInfo(
                handle, cl_profiling_info(CL_PROFILING_COMMAND_END), MemoryLayout<cl_ulong>.size,
                &value, nil),
            "clGetEventProfilingInfo")
        return UInt64(value)
    }
}

/// Device memory. Released when the last reference goes; the driver keeps it alive until
/// enqueued commands that use it have finished.
final class CLBuffer: @unchecked Sendable {
    let handle: cl_mem
    let bytes: Int
    private let counter: MemoryCounter

    init(context: CLContext, bytes: Int) throws {
        var status: cl_int = 0
        // A zero-size buffer is invalid in OpenCL; empty tensors get one word.
        let size = max(bytes, 4)
        guard
            let mem = clCreateBuffer(
                context.handle, cl_mem_flags(CL_MEM_READ_WRITE), size, nil, &status),
            status == CL_SUCCESS
        else {
            throw OpenCLError(code: status, call: "clCreateBuffer", context: "\(size) bytes")
        }
        self.handle = mem
        self.bytes = bytes
        self.counter = context.memory
        counter.add(size)
    }

    deinit {
        clReleaseMemObject(handle)
        counter.add(-max(bytes, 4))
    }
}

/// A compiled program for one context's device.
final class CLProgram: @unchecked Sendable {
    let handle: cl_program
    let name: String

    /// Compiles `source`; a compile error throws `OpenCLBuildError` with the device's log.
    init(context: CLContext, name: String, source: String, options: String, deviceName: String)
        throws
    {
        var status: cl_int = 0
        let program: cl_program? = source.withCString { cSource in
            var pointer: UnsafePointer<CChar>? = cSource
            var length = strlen(cSource)
            return clCreateProgramWithSource(context.handle, 1, &pointer, &length, &status)
        }
        guard let program, status == CL_SUCCESS else {
            throw OpenCLError(
                code: status, call: "clCreateProgramWithSource", context: "program \(name)")
        }
        self.handle = program
        self.name = name
        var device = context.device
        let buildStatus = clBuildProgram(program, 1, &device, options, nil, nil)
        if buildStatus != CL_SUCCESS {
            let log =
                (try? Self.buildLog(program, device: context.device)) ?? "(no build log available)"
            if buildStatus == CL_BUILD_PROGRAM_FAILURE || buildStatus == CL_INVALID_BUILD_OPTIONS {
                throw OpenCLBuildError(
                    program: name, device: deviceName, options: options, log: log)
            }
            throw OpenCLError(
                code: buildStatus, call: "clBuildProgram", context: "program \(name): \(log)")
        }
    }

    deinit { clReleaseProgram(handle) }

    static func buildLog(_ program: cl_program, device: cl_device_id?) throws -> String {
        var size = 0
        try clCheck(
            clGetProgramBuildInfo(
                program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size),
            "clGetProgramBuildInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(
            clGetProgramBuildInfo(
                program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil),
            "clGetProgramBuildInfo")
        return String(
            decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A kernel object. Arguments are set just before each launch; a kernel object is used by
/// one queue at a time (the device serialises set-args + enqueue under a lock).
final class CLKernel: @unchecked Sendable {
    let handle: cl_kernel
    let name: String
    let program: CLProgram

    init(program: CLProgram, name: String) throws {
        var status: cl_int = 0
        guard let kernel = clCreateKernel(program.handle, name, &status), status == CL_SUCCESS
        else {
            throw OpenCLError(
                code: status, call: "clCreateKernel",
                context: "kernel \(name) in program \(program.name)")
        }
        self.handle = kernel
        self.name = name
        self.program = program
    }

    deinit { clReleaseKernel(handle) }

    enum Argument {
        case buffer(CLBuffer?)
        case int(Int32)
        case float(Float)
    }

    func setArguments(_ arguments: [Argument]) throws {
        for (index, argument) in arguments.enumerated() {
            let status: cl_int
            switch argument {
            case .buffer(let buffer):
                var mem: cl_mem? = buffer?.handle
                status = clSetKernelArg(handle, cl_uint(index), MemoryLayout<cl_mem?>.size, &mem)
            case .int(var value):
                status = clSetKernelArg(handle, cl_uint(index), 4, &value)
            case .float(var value):
                status = clSetKernelArg(handle, cl_uint(index), 4, &value)
            }
            try clCheck(status, "clSetKernelArg", "kernel \(name), argument \(index)")
        }
    }
}
