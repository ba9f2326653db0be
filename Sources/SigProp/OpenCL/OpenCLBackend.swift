import COpenCL
import Foundation

extension CLBuffer: TensorStorage {}

/// An in-order OpenCL queue behind a `Stream`.
final class OpenCLQueue: BackendQueue, @unchecked Sendable {
    let queue: CLQueue
    var kernelLog: KernelLog?
    init(_ queue: CLQueue) { self.queue = queue }

    /// Scratch buffers of this queue (im2col matrices, split-K partials), kept between calls:
    /// work on one in-order queue never overlaps, so reuse is safe here, and a 64 MiB
    /// allocation per convolution is not paid again. Other queues have their own.
    private var scratch: [Int: CLBuffer] = [:]
    private let scratchLock = NSLock()
    /// Held while an operation enqueues its launches through the scratch buffers, so threads
    /// that share the queue (a stream used from several threads) cannot interleave theirs
    /// between another's write and read of a buffer. Recursive: a convolution's product
    /// splits K through the same queue.
    private let sequenceLock = NSRecursiveLock()

    func sequence<T>(_ body: () throws -> T) rethrows -> T {
        sequenceLock.lock()
        defer { sequenceLock.unlock() }
        return try body()
    }

    func scratch(_ slot: Int, bytes: Int, context: CLContext) throws -> CLBuffer {
        try scratchLock.withLock {
            if let buffer = scratch[slot], buffer.bytes >= bytes { return buffer }
            let buffer = try CLBuffer(context: context, bytes: bytes)
            scratch[slot] = buffer
            return buffer
        }
    }

    func record() throws -> BackendEvent { OpenCLEvent(try queue.marker()) }

    func wait(for event: BackendEvent) throws {
        guard let event = event as? OpenCLEvent else {
            throw SigPropError.configuration(
                "an OpenCL stream cannot wait for an event of another backend")
        }
        try queue.barrier(waitingFor: [event.event])
    }

    func synchronize() throws { try queue.finish() }
}

final class OpenCLEvent: BackendEvent, @unchecked Sendable {
    let event: CLEvent
    init(_ event: CLEvent) { self.event = event }
    func wait() throws { try event.wait() }
    var isComplete: Bool { event.isComplete }
    func completionNanoseconds() throws -> UInt64 { try event.endNanoseconds() }
}

/// How long one program took to build for a device.
public struct ProgramBuildReport: Sendable {
    public let program: String
    public let options: String
    public let seconds: Double
}

/// The OpenCL backend: one context on one device, programs built once and reused.
final class OpenCLBackend: Backend, @unchecked Sendable {
    let kind = BackendKind.opencl
    let info: OpenCLDeviceInfo
    let parameters: KernelParameters
    let kernelParameterOrigin: KernelParameterOrigin?
    let context: CLContext
    var deviceDescription: String { info.description }
    var capabilities: DeviceCapabilities {
        // The fused weight update on GPUs, where its epilogue can hide in the product's memory
        // traffic. On CPU drivers it is slower than the product and a separate optimizer
        // kernel (the epilogue's square roots and divisions run on the cores the product
        // needs). On GPUs it stays the default until training is timed both ways there; the
        // kernel benchmark has not shown it to pay yet (docs/performance.md).
        DeviceCapabilities(
            asynchronous: true, concurrentStreams: true, profiling: true,
            computeUnits: info.computeUnits,
            fusedWeightUpdate: info.kind == .gpu, gpu: info.kind == .gpu)
    }

    /// Guards the program/kernel caches and the set-arguments-then-enqueue pair: a kernel
    /// object's arguments are shared state, so two threads must not interleave there.
    private let lock = NSLock()
    private var programs: [String: CLProgram] = [:]
    private var kernels: [String: CLKernel] = [:]

    /// Parameters from `tuningCache` where it has an entry for this device, else the table.
    convenience init(entry: OpenCLDeviceEntry, tuningCache: KernelTuningCache? = nil) throws {
        let (parameters, origin) =
            tuningCache?.parameters(for: entry.info) ?? (
                KernelParameters.forDevice(entry.info), .table
            )
        try self.init(entry: entry, parameters: parameters, origin: origin)
    }

    init(entry: OpenCLDeviceEntry, parameters: KernelParameters, origin: KernelParameterOrigin)
        throws
    {
        info = entry.info
        self.parameters = parameters
        kernelParameterOrigin = origin
        context = try CLContext(device: entry.id, owner: entry.owner)
    }

    /// The driver spreads each kernel over the device itself; `coreLimit` is a CPU notion.
    func makeQueue(coreLimit: Int?) throws -> BackendQueue {
        OpenCLQueue(try CLQueue(context: context))
    }

    var bytesInUse: Int { context.memory.value }

    /// Global memory less what this context holds. Sub-devices of one device share a pool.
    var memory: DeviceMemory {
        let used = UInt64(max(bytesInUse, 0))
        return DeviceMemory(
            pool: "opencl \(info.platformIndex).\(info.deviceIndex)",
            freeBytes: info.globalMemoryBytes - min(used, info.globalMemoryBytes),
            largestAllocationBytes: info.maxAllocationBytes,
            source:
                "CL_DEVICE_GLOBAL_MEM_SIZE \(formatBytes(info.globalMemoryBytes)) less "
                + "\(formatBytes(used)) in use; single buffers up to "
                + "\(formatBytes(info.maxAllocationBytes)) (CL_DEVICE_MAX_MEM_ALLOC_SIZE)")
    }

    func makeUserEvent() throws -> BackendEvent {
        var status: cl_int = 0
        let event = clCreateUserEvent(context.handle, &status)
        guard let event, status == CL_SUCCESS else {
            throw OpenCLError(code: status, call: "clCreateUserEvent")
        }
        return OpenCLEvent(CLEvent(event))
    }

    func completeUserEvent(_ event: BackendEvent) throws {
        guard let event = event as? OpenCLEvent else {
            throw SigPropError.configuration(
                "an OpenCL user event must come from the OpenCL backend")
        }
        try clCheck(
            clSetUserEventStatus(event.event.handle, cl_int(CL_COMPLETE)), "clSetUserEventStatus")
    }

    // MARK: Programs

    /// Builds every program now (instead of on first use) and reports the build times.
    func buildAllPrograms() throws -> [ProgramBuildReport] {
        try KernelRegistry.programNames.map(buildProgram)
    }

    /// Builds one program now (the tuner separates build failures from wrong results).
    func buildProgram(_ name: String) throws -> ProgramBuildReport {
        let start = DispatchTime.now().uptimeNanoseconds
        _ = try lock.withLock { try program(name) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return ProgramBuildReport(
            program: name, options: KernelRegistry.options(for: name, parameters: parameters),
            seconds: seconds)
    }

    /// Compiles arbitrary source for this device (tests use it to see a failing build's log).
    func compile(name: String, source: String, options: String) throws -> CLProgram {
        try CLProgram(
            context: context, name: name, source: source, options: options, deviceName: info.name)
    }

    /// Caller holds `lock`.
    private func program(_ name: String) throws -> CLProgram {
        if let program = programs[name] { return program }
        guard let source = KernelRegistry.source(of: name) else {
            throw SigPropError.configuration(
                "no kernel program '\(name)' is embedded; add Kernels/\(name).cl")
        }
        let program = try compile(
            name: name, source: source,
            options: KernelRegistry.options(for: name, parameters: parameters))
        programs[name] = program
        return program
    }

    /// Sets the arguments of `program`'s `kernel` and enqueues it: atomically with respect to
    /// other threads using the same kernel object.
    @discardableResult
    func launch(
        _ program: String, _ kernel: String, _ arguments: [CLKernel.Argument],
        global: [Int], local: [Int]? = nil, on queue: BackendQueue
    ) throws -> CLEvent? {
        guard global.allSatisfy({ $0 > 0 }) else { return nil }
        let clQueue = (queue as! OpenCLQueue).queue
        let event = try lock.withLock {
            let key = program + "." + kernel
            let object: CLKernel
            if let cached = kernels[key] {
                object = cached
            } else {
                object = try CLKernel(program: try self.program(program), name: kernel)
                kernels[key] = object
            }
            try object.setArguments(arguments)
            return try clQueue.launch(object, global: global, local: local)
        }
        (queue as! OpenCLQueue).kernelLog?.add(kernel) {
            try event.wait()
            guard let start = try? event.startNanoseconds(), let end = try? event.endNanoseconds()
            else { return nil }
            return (start, end)
        }
        return event
    }

    // MARK: Memory

    func allocate(count: Int) throws -> TensorStorage {
        let bytes = count * MemoryLayout<Float>.size
        if UInt64(bytes) > info.maxAllocationBytes {
            throw SigPropError.outOfMemory(
                device: info.name, requestedBytes: bytes, limitBytes: info.maxAllocationBytes,
                detail:
                    "largest single buffer (CL_DEVICE_MAX_MEM_ALLOC_SIZE); global memory "
                    + "\(formatBytes(info.globalMemoryBytes))"
            )
        }
        do {
            return try CLBuffer(context: context, bytes: bytes)
        } catch let error as OpenCLError
            where [
                CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_RESOURCES, CL_OUT_OF_HOST_MEMORY,
                CL_INVALID_BUFFER_SIZE,
            ].contains(error.code)
        {
            throw SigPropError.outOfMemory(
                device: info.name, requestedBytes: bytes, limitBytes: info.globalMemoryBytes,
                detail: "global memory; the driver answered \(error.name)")
        }
    }

    func mem(_ storage: TensorStorage) -> CLBuffer { storage as! CLBuffer }
    private func clQueue(_ queue: BackendQueue) -> CLQueue { (queue as! OpenCLQueue).queue }

    func write(_ values: [Float], to storage: TensorStorage, on queue: BackendQueue) throws {
        guard !values.isEmpty else { return }
        try values.withUnsafeBytes {
            try clQueue(queue).write(mem(storage), from: $0.baseAddress!, bytes: $0.count)
        }
    }

    func read(_ storage: TensorStorage, count: Int, on queue: BackendQueue) throws -> [Float] {
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return values }
        try values.withUnsafeMutableBytes {
            try clQueue(queue).read(mem(storage), into: $0.baseAddress!, bytes: $0.count)
        }
        return values
    }

    func copy(
        _ source: TensorStorage, at sourceOffset: Int, to destination: TensorStorage,
        at destinationOffset: Int, count: Int, on queue: BackendQueue
    ) throws {
        guard count > 0 else { return }
        try clQueue(queue).copy(
            mem(source), at: sourceOffset * 4, to: mem(destination), at: destinationOffset * 4,
            bytes: count * 4)
    }

    // MARK: Operations

    func fill(_ storage: TensorStorage, count: Int, value: Float, on queue: BackendQueue) throws {
        try launch(
            "elementwise", "fill", [.buffer(mem(storage)), .int(Int32(count)), .float(value)],
            global: [count], on: queue)
    }

    func activate(
        _ activation: Activation, input: TensorStorage, output: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        try launch(
            "elementwise", "activation_forward",
            [.buffer(mem(input)), .buffer(mem(output)), .int(Int32(count)), .int(activation.code)],
            global: [count], on: queue)
    }

    func activationGradient(
        _ activation: Activation, output: TensorStorage, gradient: TensorStorage,
        result: TensorStorage, count: Int, on queue: BackendQueue
    ) throws {
        try launch(
            "elementwise", "activation_backward",
            [
                .buffer(mem(output)), .buffer(mem(gradient)), .buffer(mem(result)),
                .int(Int32(count)), .int(activation.code),
            ],
            global: [count], on: queue)
    }

    func axpby(
        alpha: Float, x: TensorStorage, beta: Float, y: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        try launch(
            "elementwise", "axpby",
            [.float(alpha), .buffer(mem(x)), .float(beta), .buffer(mem(y)), .int(Int32(count))],
            global: [count], on: queue)
    }

    func channelSums(
        _ x: TensorStorage, outer: Int, channels: Int, inner: Int, into: TensorStorage,
        alpha: Float, beta: Float, on queue: BackendQueue
    ) throws {
        let arguments: [CLKernel.Argument] = [
            .buffer(mem(x)), .int(Int32(outer)), .int(Int32(channels)), .int(Int32(inner)),
            .buffer(mem(into)),
            .float(alpha), .float(beta),
        ]
        if groupedReductions && (inner > 1 || outer >= Self.groupedRows) {
            try launch(
                "reduce", "channel_sums_grouped", arguments, global: [channels * Self.groupSumSize],
                local: [Self.groupSumSize], on: queue)
        } else {
            try launch("reduce", "channel_sums", arguments, global: [channels], on: queue)
        }
    }

    func fillNormal(
        _ x: TensorStorage, count: Int, deviation: Float, seed: UInt64, on queue: BackendQueue
    ) throws {
        try launch(
            "elementwise", "fill_normal",
            [
                .buffer(mem(x)), .int(Int32(count)),
                .int(Int32(bitPattern: UInt32(seed & 0xFFFF_FFFF))),
                .int(Int32(bitPattern: UInt32(seed >> 32))), .float(deviation),
            ],
            global: [count], on: queue)
    }

    func deviationScale(
        _ x: TensorStorage, count: Int, target: Float, power: Float, sign: Float,
        into factor: TensorStorage, on queue: BackendQueue
    ) throws {
        let arguments: [CLKernel.Argument] = [
            .buffer(mem(x)), .int(Int32(count)), .float(target), .float(power), .float(sign),
            .buffer(mem(factor)),
        ]
        if groupedReductions {
            try launch(
                "reduce", "deviation_scale_grouped", arguments, global: [Self.groupSumSize],
                local: [Self.groupSumSize], on: queue)
        } else {
            try launch("reduce", "deviation_scale", arguments, global: [1], on: queue)
        }
    }

    /// Images per chunk of a convolution: a chunk's scratch (im2col's patch matrix, or the
    /// direct kernels' padded planes and dZ) and its output stay within a budget. On a CPU
    /// driver the scratch is read back from the caches right after it is written, so CPU devices
    /// take chunks a few times the size of a core's L2 (8 MB); smaller ones pay more per launch
    /// than they gain. GPUs keep large chunks: fewer, fuller launches.
    func convChunk(_ s: ConvShape, scratchPerImage: Int) -> Int {
        let perImage = max(1, (scratchPerImage + s.outChannels * s.outHeight * s.outWidth) * 4)
        let budget = Int(
            min(UInt64(info.kind == .cpu ? 8 << 20 : 64 << 20), info.maxAllocationBytes / 2))
        return max(1, min(s.batch, budget / perImage))
    }

    /// im2col's patch matrix for one image: floats.
    private func patchMatrix(_ s: ConvShape) -> Int {
        s.inChannels * s.kernelHeight * s.kernelWidth * s.outHeight * s.outWidth
    }

    /// Convolution as `conv_direct` over padded planes where `DirectConvolutionPlan` allows
    /// it, else as im2col + a batch of matrix products per chunk of images, one per image (the
    /// fast gemm kernel, so conv speed follows gemm speed), each writing its image's NCHW output.
    /// Either way bias (per channel) and activation are applied in the epilogue.
    func conv2d(
        _ s: ConvShape, input: TensorStorage, weight: TensorStorage, bias: TensorStorage?,
        output: TensorStorage, activation: Activation, on queue: BackendQueue
    ) throws {
        let clQueue = queue as! OpenCLQueue
        if let plan = DirectConvolutionPlan(s, parameters) {
            let chunk = convChunk(s, scratchPerImage: s.inChannels * plan.plane)
            try clQueue.sequence {
                let padded = try clQueue.scratch(
                    0, bytes: s.inChannels * chunk * plan.plane * 4, context: context)
                for n0 in stride(from: 0, to: s.batch, by: chunk) {
                    let count = min(chunk, s.batch - n0)
                    try padPlanes(
                        s, plan, input: input, into: padded, n0: n0, count: count, on: queue)
                    try launch(
                        "conv", "conv_direct",
                        [
                            .buffer(padded), .buffer(mem(weight)), .buffer(mem(bias ?? weight)),
                            .int(bias == nil ? 0 : 1),
                            .buffer(mem(output)),
                        ]
                            + [
                                n0, s.inChannels, s.outChannels, s.kernelHeight, s.kernelWidth,
                                plan.width, plan.plane, s.outHeight, s.outWidth,
                                Int(activation.code),
                            ].map { .int(Int32($0)) },
                        global: plan.global + [count], local: [1, 1, 1], on: queue)
                }
            }
            return
        }
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        let chunk = convChunk(s, scratchPerImage: patchMatrix(s))
        try clQueue.sequence {
            let columns = try clQueue.scratch(
                0, bytes: patch * chunk * positions * 4, context: context)
            for n0 in stride(from: 0, to: s.batch, by: chunk) {
                let count = min(chunk, s.batch - n0)
                try im2col(
                    s, input: input, into: columns, n0: n0, count: count, rowStride: positions,
                    imageStride: patch * positions, on: queue)
                let images = GemmBatch(
                    count: count, strideB: patch * positions,
                    offsetC: n0 * s.outChannels * positions, strideC: s.outChannels * positions)
                try gemm(
                    GemmShape(
                        m: s.outChannels, n: positions, k: patch, transposeA: false,
                        transposeB: false, alpha: 1, beta: 0,
                        activation: activation, biasPerRow: true, batch: images),
                    a: weight, b: columns, c: output, bias: bias, on: queue)
            }
        }
    }

    private func im2col(
        _ s: ConvShape, input: TensorStorage, into columns: CLBuffer, n0: Int, count: Int,
        rowStride: Int, imageStride: Int,
        on queue: BackendQueue
    ) throws {
        let arguments = [
            n0, count, rowStride, imageStride, s.inChannels, s.height, s.width, s.kernelHeight,
            s.kernelWidth, s.stride, s.padding,
            s.outHeight, s.outWidth,
        ].map { CLKernel.Argument.int(Int32($0)) }
        try launch(
            "conv", "im2col", [.buffer(mem(input)), .buffer(columns)] + arguments,
            global: [s.outHeight, s.inChannels * s.kernelHeight * s.kernelWidth, count], on: queue)
    }

    /// dW = sum over chunks of dZ times the chunk's input patches: `conv_wgrad_direct` over
    /// padded planes where `DirectConvolutionPlan` allows it, else dZ (as O x count*P) times
    /// the chunk's im2col patch matrix transposed.
    func conv2dWeightGradient(
        _ s: ConvShape, input: TensorStorage, outputGradient: TensorStorage,
        weightGradient: TensorStorage, biasGradient: TensorStorage?, beta: Float,
        on queue: BackendQueue
    ) throws {
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        let clQueue = queue as! OpenCLQueue
        if s.batch == 0 {
            try axpby(
                alpha: 0, x: weightGradient, beta: beta, y: weightGradient,
                count: s.outChannels * patch, on: queue)
        }
        if let plan = DirectConvolutionPlan(s, parameters) {
            let chunk = convChunk(
                s, scratchPerImage: s.inChannels * plan.plane + s.outChannels * plan.grid)
            try clQueue.sequence {
                let padded = try clQueue.scratch(
                    0, bytes: s.inChannels * chunk * plan.plane * 4, context: context)
                let gradient = try clQueue.scratch(
                    1, bytes: s.outChannels * chunk * plan.grid * 4, context: context)
                for n0 in stride(from: 0, to: s.batch, by: chunk) {
                    let count = min(chunk, s.batch - n0)
                    try padPlanes(
                        s, plan, input: input, into: padded, n0: n0, count: count, on: queue)
                    try launch(
                        "conv", "pad_gradient",
                        [.buffer(mem(outputGradient)), .buffer(gradient)]
                            + [n0, s.outChannels, s.outHeight, s.outWidth, plan.width, plan.grid]
                            .map { .int(Int32($0)) },
                        global: [
                            plan.width, (plan.grid + plan.width - 1) / plan.width,
                            count * s.outChannels,
                        ], on: queue)
                    try launch(
                        "conv", "conv_wgrad_direct",
                        [
                            .buffer(padded), .buffer(gradient), .buffer(mem(weightGradient)),
                            .float(n0 == 0 ? beta : 1),
                        ]
                            + [
                                count, s.inChannels, s.outChannels, s.kernelHeight, s.kernelWidth,
                                plan.width, plan.plane, plan.grid,
                            ].map { .int(Int32($0)) },
                        global: plan.gradientGlobal, local: [1, 1], on: queue)
                }
            }
        } else {
            try conv2dWeightGradientByIm2col(
                s, input: input, outputGradient: outputGradient, weightGradient: weightGradient,
                beta: beta, on: queue)
        }
        if let biasGradient {
            try channelSums(
                outputGradient, outer: s.batch, channels: s.outChannels, inner: positions,
                into: biasGradient,
                alpha: 1, beta: beta, on: queue)
        }
    }

    private func padPlanes(
        _ s: ConvShape, _ plan: DirectConvolutionPlan, input: TensorStorage, into padded: CLBuffer,
        n0: Int, count: Int,
        on queue: BackendQueue
    ) throws {
        try launch(
            "conv", "pad_planes",
            [.buffer(mem(input)), .buffer(padded)]
                + [n0, s.inChannels, s.height, s.width, s.padding, plan.width, plan.rows].map {
                    .int(Int32($0))
                },
            global: [plan.width, plan.rows, count * s.inChannels], on: queue)
    }

    private func conv2dWeightGradientByIm2col(
        _ s: ConvShape, input: TensorStorage, outputGradient: TensorStorage,
        weightGradient: TensorStorage,
        beta: Float, on queue: BackendQueue
    ) throws {
        let patch = s.inChannels * s.kernelHeight * s.kernelWidth
        let positions = s.outHeight * s.outWidth
        let chunk = convChunk(s, scratchPerImage: patchMatrix(s))
        let clQueue = queue as! OpenCLQueue
        try clQueue.sequence {
            let columns = try clQueue.scratch(
                0, bytes: patch * chunk * positions * 4, context: context)
            let gathered = try clQueue.scratch(
                1, bytes: s.outChannels * chunk * positions * 4, context: context)
            for n0 in stride(from: 0, to: s.batch, by: chunk) {
                let count = min(chunk, s.batch - n0)
                try im2col(
                    s, input: input, into: columns, n0: n0, count: count,
                    rowStride: count * positions, imageStride: positions, on: queue)
                try launch(
                    "conv", "nchw_to_channel_major",
                    [
                        .buffer(mem(outputGradient)), .buffer(gathered), .int(Int32(n0)),
                        .int(Int32(count)), .int(Int32(s.outChannels)),
                        .int(Int32(positions)),
                    ], global: [positions, s.outChannels, count], on: queue)
                try gemm(
                    GemmShape(
                        m: s.outChannels, n: patch, k: count * positions, transposeA: false,
                        transposeB: true, alpha: 1,
                        beta: n0 == 0 ? beta : 1, activation: .identity),
                    a: gathered, b: columns, c: weightGradient, bias: nil, on: queue)
            }
        }
    }

    func pool2d(
        _ kind: PoolKind, shape s: PoolShape, input: TensorStorage, output: TensorStorage,
        on queue: BackendQueue
    ) throws {
        try launch(
            "pool", "pool2d",
            [
                .buffer(mem(input)), .buffer(mem(output)), .int(Int32(s.planes)),
                .int(Int32(s.height)),
                .int(Int32(s.width)), .int(Int32(s.size)), .int(kind == .max ? 0 : 1),
                .int(s.ceil ? 1 : 0),
            ],
            global: [s.planes * s.outHeight * s.outWidth], on: queue)
    }

    func multiply(
        _ a: TensorStorage, _ b: TensorStorage, into: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        try launch(
            "elementwise", "multiply",
            [.buffer(mem(a)), .buffer(mem(b)), .buffer(mem(into)), .int(Int32(count))],
            global: [count], on: queue)
    }

    private func layoutArguments(_ layout: GroupLayout) -> [CLKernel.Argument] {
        [.int(Int32(layout.outer)), .int(Int32(layout.groups)), .int(Int32(layout.inner))]
    }

    /// Work-items of the grouped reductions (`GROUP_SUM_SIZE` in common.cl).
    static let groupSumSize = 128

    /// Rows from which a GPU sums matrix columns in work-groups: a batch's bias gradient
    /// (128 rows by hundreds of columns) keeps a work-item per column, whose neighbours read
    /// neighbouring addresses; the output layer's over a spike train (T·B rows by 10) does not.
    static let groupedRows = 1024

    /// GPUs reduce each channel or norm group in a work-group (`*_grouped` kernels); CPU
    /// drivers in one work-item, whose loop they vectorise.
    var groupedReductions: Bool { info.kind == .gpu && info.maxWorkGroupSize >= Self.groupSumSize }

    func normalize(
        _ x: TensorStorage, layout: GroupLayout, xhat: TensorStorage, rstd: TensorStorage,
        epsilon: Float, on queue: BackendQueue
    ) throws {
        let arguments =
            [.buffer(mem(x)), .buffer(mem(xhat)), .buffer(mem(rstd))] + layoutArguments(layout) + [
                .float(epsilon)
            ]
        if groupedReductions {
            try launch(
                "norm", "normalize_groups_grouped", arguments,
                global: [layout.groups * Self.groupSumSize], local: [Self.groupSumSize], on: queue)
        } else {
            try launch("norm", "normalize_groups", arguments, global: [layout.groups], on: queue)
        }
    }

    func normalizeGradient(
        _ dxhat: TensorStorage, xhat: TensorStorage, rstd: TensorStorage, into: TensorStorage,
        layout: GroupLayout, on queue: BackendQueue
    ) throws {
        let arguments =
            [.buffer(mem(dxhat)), .buffer(mem(xhat)), .buffer(mem(rstd)), .buffer(mem(into))]
            + layoutArguments(layout)
        if groupedReductions {
            try launch(
                "norm", "normalize_groups_backward_grouped", arguments,
                global: [layout.groups * Self.groupSumSize],
                local: [Self.groupSumSize], on: queue)
        } else {
            try launch(
                "norm", "normalize_groups_backward", arguments, global: [layout.groups], on: queue)
        }
    }

    func scaleShiftChannels(
        _ x: TensorStorage, scale: TensorStorage, shift: TensorStorage?, into: TensorStorage,
        count: Int, channels: Int, inner: Int, on queue: BackendQueue
    ) throws {
        let outer = count / (channels * inner)
        try launch(
            "norm", "scale_shift_channels",
            [
                .buffer(mem(x)), .buffer(mem(scale)), .buffer(mem(shift ?? scale)),
                .int(shift == nil ? 0 : 1),
                .buffer(mem(into)), .int(Int32(outer)), .int(Int32(channels)), .int(Int32(inner)),
            ],
            global: inner == 1 ? [channels, outer] : [inner, outer * channels], on: queue)
    }

    func localLossRows(
        _ loss: LocalLossKind, batch: Int, columns: Int, y: TensorStorage, yy: TensorStorage,
        mask: TensorStorage, dY: TensorStorage, rowLosses: TensorStorage, on queue: BackendQueue
    ) throws {
        try launch(
            "local_loss", "local_loss_rows",
            [
                .buffer(mem(y)), .buffer(mem(yy)), .buffer(mem(mask)), .buffer(mem(dY)),
                .buffer(mem(rowLosses)),
                .int(Int32(batch)), .int(Int32(columns)), .int(loss.code), .int(loss.k),
                .float(LocalLossKind.tieTolerance),
            ],
            global: [batch], on: queue)
    }

    /// Work-items per row of the Forward-Forward kernels: a group reducing in local memory on
    /// GPUs, one work-item on CPU drivers (as the grouped reductions).
    private var forwardForwardGroup: Int { groupedReductions ? Self.groupSumSize : 1 }

    func forwardForwardRows(
        _ p: ForwardForwardRowShape, a: TensorStorage, normalized: TensorStorage,
        sumSquares: TensorStorage, gradient: TensorStorage?, rowLosses: TensorStorage?,
        peer: TensorStorage?, on queue: BackendQueue
    ) throws {
        // Absent outputs are never written (no loss rows), absent inputs never read: any
        // buffer stands in for them.
        try launch(
            "forward_forward", "ff_rows",
            [
                .buffer(mem(a)), .buffer(mem(normalized)), .buffer(mem(sumSquares)),
                .buffer(mem(gradient ?? normalized)), .buffer(mem(rowLosses ?? sumSquares)),
                .buffer(mem(peer ?? a)), .int(Int32(p.columns)), .int(Int32(p.positives)),
                .int(Int32(gradient == nil ? 0 : p.lossRows)), .float(p.threshold),
                .int(p.relu ? 1 : 0), .int(peer == nil ? 0 : 1), .float(p.epsilon),
            ],
            global: [p.rows * forwardForwardGroup], local: [forwardForwardGroup], on: queue)
    }

    func forwardForwardRelabel(
        _ p: ForwardForwardRelabelShape, a: TensorStorage, inputs: TensorStorage,
        neutral: TensorStorage?, weight: TensorStorage, bias: TensorStorage,
        plan: TensorStorage, into: TensorStorage, on queue: BackendQueue
    ) throws {
        // Without neutral rows the plan asks for none: any buffer stands in.
        try launch(
            "forward_forward", "ff_relabel",
            [
                .buffer(mem(a)), .buffer(mem(inputs)), .buffer(mem(neutral ?? inputs)),
                .buffer(mem(weight)), .buffer(mem(bias)), .buffer(mem(plan)),
                .int(Int32(p.units)), .int(Int32(p.inputs)), .int(Int32(p.classes)),
                .int(Int32(p.rows)), .int(Int32(p.firstRow)), .buffer(mem(into)),
            ],
            global: [p.units, p.rows], on: queue)
    }

    func forwardForwardRelabelGradient(
        _ p: ForwardForwardRelabelShape, gradient: TensorStorage, inputs: TensorStorage,
        plan: TensorStorage, into weightGradient: TensorStorage, on queue: BackendQueue
    ) throws {
        try launch(
            "forward_forward", "ff_relabel_gradient",
            [
                .buffer(mem(gradient)), .buffer(mem(inputs)), .buffer(mem(plan)),
                .int(Int32(p.units)), .int(Int32(p.inputs)), .int(Int32(p.classes)),
                .int(Int32(p.rows)), .int(Int32(p.firstRow)), .buffer(mem(weightGradient)),
            ],
            global: [p.units, p.classes], on: queue)
    }

    func forwardForwardPeer(
        a: TensorStorage, columns: Int, positives: Int, runningMean: TensorStorage,
        peer: TensorStorage, momentum: Float, weight: Float, on queue: BackendQueue
    ) throws {
        try launch(
            "forward_forward", "ff_peer",
            [
                .buffer(mem(a)), .buffer(mem(runningMean)), .buffer(mem(peer)),
                .int(Int32(columns)), .int(Int32(positives)), .float(momentum), .float(weight),
            ],
            global: [forwardForwardGroup], local: [forwardForwardGroup], on: queue)
    }

    /// The neuron's kernel arguments after the shape: beta, threshold, reset, surrogate.
    private func neuronArguments(_ d: LIFDynamics, _ neuron: NeuronStorage)
        -> [CLKernel.Argument]
    {
        [
            .buffer(mem(neuron.beta)), .buffer(mem(neuron.threshold)),
            .int(d.neuron.reset == .zero ? 1 : 0), .int(d.surrogate?.code ?? 0),
            .float(d.slope),
        ]
    }

    func lifForward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, current: TensorStorage,
        membrane: TensorStorage?, spikes: TensorStorage, representation: TensorStorage,
        rate: TensorStorage, stepRepresentation: TensorStorage?, neuron: NeuronStorage,
        steps chunk: Range<Int>, state: TensorStorage?, on queue: BackendQueue
    ) throws {
        try launch(
            "spiking", "lif_forward",
            [
                .buffer(mem(current)), .buffer(mem(membrane ?? spikes)), .buffer(mem(spikes)),
                .buffer(mem(representation)), .buffer(mem(rate)),
                .buffer(mem(stepRepresentation ?? spikes)), .int(membrane == nil ? 0 : 1),
                .int(stepRepresentation == nil ? 0 : 1), .int(Int32(dynamics.steps)),
                .int(Int32(plane)), .int(constantCurrent ? 1 : 0),
            ] + neuronArguments(dynamics, neuron)
                + [
                    .buffer(mem(state ?? representation)), .int(Int32(chunk.lowerBound)),
                    .int(Int32(chunk.count)), .int(state == nil ? 0 : 1),
                ],
            global: [plane], on: queue)
    }

    func lifBackward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, perStep: Bool,
        membrane: TensorStorage?, spikes: TensorStorage, gradient: TensorStorage,
        currentGradient: TensorStorage, neuron: NeuronStorage, neuronPartials: TensorStorage?,
        on queue: BackendQueue
    ) throws {
        try launch(
            "spiking", "lif_backward",
            [
                .buffer(mem(membrane ?? spikes)), .buffer(mem(spikes)), .buffer(mem(gradient)),
                .buffer(mem(currentGradient)), .buffer(mem(neuronPartials ?? currentGradient)),
                .int(neuronPartials == nil ? 0 : 1), .int(Int32(dynamics.steps)),
                .int(Int32(plane)), .int(constantCurrent ? 1 : 0), .int(perStep ? 1 : 0),
            ] + neuronArguments(dynamics, neuron),
            global: [plane], on: queue)
    }

    func lifSurrogateGradient(
        _ dynamics: LIFDynamics, count: Int, plane: Int, membrane: TensorStorage,
        gradient: TensorStorage, weight: TensorStorage, into out: TensorStorage,
        neuron: NeuronStorage, on queue: BackendQueue
    ) throws {
        try launch(
            "spiking", "lif_surrogate_gradient",
            [
                .buffer(mem(membrane)), .buffer(mem(gradient)), .buffer(mem(weight)),
                .buffer(mem(out)), .int(Int32(count)), .int(Int32(plane)),
                .buffer(mem(neuron.threshold)), .int(dynamics.surrogate?.code ?? 0),
                .float(dynamics.slope),
            ],
            global: [plane], on: queue)
    }

    func spikeEncode(
        _ encoding: SpikeEncoding, steps: Int, chunk: Range<Int>, plane: Int, seed: UInt32,
        images: TensorStorage, trains: TensorStorage, on queue: BackendQueue
    ) throws {
        try launch(
            "spiking", "spike_encode",
            [
                .buffer(mem(images)), .buffer(mem(trains)), .int(Int32(steps)),
                .int(Int32(plane)), .int(encoding.code ?? 0),
                .int(Int32(bitPattern: seed)), .int(Int32(chunk.lowerBound)),
                .int(Int32(chunk.count)),
            ],
            global: [plane], on: queue)
    }

    func step(
        _ s: UpdateRule, parameter: TensorStorage, gradient: TensorStorage,
        state: [TensorStorage], count: Int, on queue: BackendQueue
    ) throws {
        switch s.kind {
        case .adam, .amsgrad:
            let (m, v) = (state[0], state[1])
            let vMax = state.count > 2 ? state[2] : nil
            try launch(
                "optimizer", "adam_step",
                [
                    .buffer(mem(parameter)), .buffer(mem(gradient)), .buffer(mem(m)),
                    .buffer(mem(v)), .buffer(mem(vMax ?? v)),
                    .int(vMax == nil ? 0 : 1), .int(Int32(count)), .float(s.stepSize),
                    .float(s.beta1), .float(s.beta2),
                    .float(s.epsilon), .float(s.weightDecay), .float(s.biasCorrection2Sqrt),
                ],
                global: [count], on: queue)
        case .sgd:
            let momentum = state.first
            try launch(
                "optimizer", "sgd_step",
                [
                    .buffer(mem(parameter)), .buffer(mem(gradient)),
                    .buffer(mem(momentum ?? gradient)),
                    .int(momentum != nil && s.momentum != 0 ? 1 : 0), .int(Int32(count)),
                    .float(s.learningRate), .float(s.momentum),
                    .float(s.dampening), .float(s.weightDecay), .int(s.nesterov ? 1 : 0),
                    .int(s.firstStep ? 1 : 0),
                ],
                global: [count], on: queue)
        }
    }
}

/// The direct convolution kernels' launches (`conv_direct`, `conv_wgrad_direct`), where the
/// device runs them: CPU drivers (the register-blocked kernels), stride 1, and at least one
/// tile of output channels. Elsewhere both passes are im2col + gemm.
struct DirectConvolutionPlan: Equatable {
    /// A padded input plane: `width` = W + 2 pad floats per row, `rows` rows (the padded ones
    /// plus the slack that the last tile of positions reads), `plane` = width x rows floats.
    var width: Int, rows: Int
    var plane: Int { width * rows }
    /// Flat positions of a plane of dZ on the same grid for the weight gradient: HO x width,
    /// rounded up to whole `gemm_dot` vectors.
    var grid: Int
    /// `conv_direct`'s work-items per image: tiles of output channels, tiles of flat positions.
    var global: [Int]
    /// `conv_wgrad_direct`'s work-items: tiles of taps (C x KH x KW), tiles of output channels.
    var gradientGlobal: [Int]

    init?(_ s: ConvShape, _ p: KernelParameters) {
        guard p.gemmKernels == .registerBlocked, s.stride == 1, s.outChannels >= p.gemmOuterRows
        else { return nil }
        let divide = { (x: Int, y: Int) in (x + y - 1) / y }
        let tile = p.gemmOuterVectors * p.gemmVectorWidth
        width = s.width + 2 * s.padding
        let tiles = divide(s.outHeight * width, tile)
        grid = divide(s.outHeight * width, p.gemmDotVectorWidth) * p.gemmDotVectorWidth
        // The last position either kernel computes, plus the last tap's offset, must lie inside.
        let reach = max(tiles * tile, grid) + (s.kernelHeight - 1) * width + s.kernelWidth - 1
        rows = divide(reach, width)
        global = [divide(s.outChannels, p.gemmOuterRows), tiles]
        gradientGlobal = [
            divide(s.inChannels * s.kernelHeight * s.kernelWidth, p.gemmDotColumns),
            divide(s.outChannels, p.gemmDotRows),
        ]
    }
}
