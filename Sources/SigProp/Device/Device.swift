/// Which implementation runs the operations.
public enum BackendKind: String, Sendable, CaseIterable {
    case opencl, cpu
}

/// What a device can do, as data: the scheduler reads these instead of guessing.
public struct DeviceCapabilities: Sendable, Equatable {
    /// Operations return before they finish; ordering across streams needs events.
    public var asynchronous: Bool
    /// Several streams may run work at the same time.
    public var concurrentStreams: Bool
    /// Enqueued work carries device timestamps (OpenCL profiling events).
    public var profiling: Bool
    /// Units that run work in parallel (OpenCL compute units, CPU cores): what the placement
    /// of blocks and the split of cores between stage workers divide.
    public var computeUnits: Int
    /// Dense layers step their weights inside the weight-gradient product
    /// (`Device.updateWeights`) instead of storing the gradient and stepping after it.
    public var fusedWeightUpdate = false
    /// A GPU: many units that a small kernel leaves idle, and a cost per launch and event
    /// that the default schedule weighs (`Schedule.automatic`).
    public var gpu = false
}

/// A tensor: a shape and float32 storage on one device. Row-major, outermost dimension first.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let device: Device
    let buffer: DeviceBuffer
    var storage: TensorStorage { buffer.storage }

    init(shape: [Int], device: Device, buffer: DeviceBuffer) {
        self.shape = shape
        self.device = device
        self.buffer = buffer
    }

    public var count: Int { shape.reduce(1, *) }
    /// Rows when viewed as a matrix: the first dimension (1 for a scalar).
    public var rows: Int { shape.first ?? 1 }
    /// Columns when viewed as a matrix: every dimension after the first, flattened.
    public var columns: Int { shape.isEmpty ? 1 : shape.dropFirst().reduce(1, *) }

    public var description: String { "Tensor\(shape) on \(device.name)" }

    /// The same storage seen with another shape of the same element count (flatten, unflatten).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count, newShape.allSatisfy({ $0 >= 0 }) else {
            throw SigPropError.shapeMismatch(
                operation: "reshaped", detail: "\(shape) cannot be seen as \(newShape)")
        }
        return Tensor(shape: newShape, device: device, buffer: buffer)
    }
}

/// An ordered stream of work (an OpenCL in-order queue; a serial worker on the CPU).
public final class Stream: @unchecked Sendable {
    public let device: Device
    let queue: BackendQueue
    /// Where tensors allocated on this stream come from (nil: fresh storage each time).
    let pool: BufferPool?

    init(device: Device, queue: BackendQueue, pool: BufferPool?) {
        self.device = device
        self.queue = queue
        self.pool = pool
    }

    /// An event that completes when everything enqueued on this stream so far has completed.
    public func record() throws -> Event { Event(try queue.record()) }

    /// Work enqueued on this stream after this call starts only once `event` completed.
    /// The host does not block.
    public func wait(for event: Event) throws { try queue.wait(for: event.backendEvent) }

    /// Blocks the host until everything enqueued on this stream has completed.
    public func synchronize() throws { try queue.synchronize() }

    /// Lets later work on this stream reuse every storage its pool holds back, without
    /// waiting: the stream runs in order, so its later work starts after the work that used
    /// them. Only where no work of another stream may still use them: a pool whose batches in
    /// flight are this stream's alone (the sequential schedule on one device).
    func reuseFreedStorage() { pool?.reclaimAll() }
}

/// A point in a stream's work.
public final class Event: @unchecked Sendable {
    let backendEvent: BackendEvent
    init(_ event: BackendEvent) { backendEvent = event }

    /// Blocks the host until the event completes.
    public func wait() throws { try backendEvent.wait() }

    /// Whether the event has completed, without blocking.
    public var isComplete: Bool { backendEvent.isComplete }

    /// When the event completed, in nanoseconds of the device's clock (compare only events
    /// of one device). Blocks until it completed.
    public func completionNanoseconds() throws -> UInt64 {
        try backendEvent.wait()
        return try backendEvent.completionNanoseconds()
    }
}

/// A compute device: allocates tensors and runs operations on streams. Layer code is written
/// against this class only; it checks shapes and devices, then hands the work to its backend.
public final class Device: @unchecked Sendable, CustomStringConvertible {
    let backend: Backend
    /// The queue behind `defaultStream`. Held as a queue, not a `Stream`, because a stream
    /// holds its device: a stored stream would keep every device alive forever.
    let defaultQueue: BackendQueue

    init(backend: Backend) throws {
        self.backend = backend
        self.defaultQueue = try backend.makeQueue(coreLimit: nil)
        fusesWeightUpdates = backend.capabilities.fusedWeightUpdate
    }

    /// Whether dense layers train with the fused weight update on this device: the backend's
    /// `capabilities.fusedWeightUpdate` unless set (tests and benchmarks compare both paths).
    public var fusesWeightUpdates: Bool

    /// The stream used when an operation is given none.
    public var defaultStream: Stream { Stream(device: self, queue: defaultQueue, pool: nil) }

    /// The CPU fallback (OpenBLAS for products, Swift for the rest), on every core or on
    /// `cores` of them (a share of the machine, as when `SIGPROP_SPLIT` divides it). Refuses an
    /// `OPENBLAS_CORETYPE` that OpenBLAS did not take or this CPU cannot run
    /// (`OpenBLASKernels.checkChosenCore`).
    public static func cpu(cores: Int? = nil, part: String? = nil) throws -> Device {
        try OpenBLASKernels.checkChosenCore()
        return try Device(backend: CPUBackend(cores: cores, part: part))
    }

    /// An OpenCL device as listed by `OpenCLDiscovery.allDevices()`, with kernel parameters
    /// from `tuningCache` where it has an entry for the device, else from the table.
    public static func opencl(_ entry: OpenCLDeviceEntry, tuningCache: KernelTuningCache? = nil)
        throws -> Device
    {
        try Device(backend: OpenCLBackend(entry: entry, tuningCache: tuningCache))
    }

    public var kind: BackendKind { backend.kind }
    public var name: String { backend.deviceDescription }
    public var capabilities: DeviceCapabilities { backend.capabilities }
    public var description: String { "\(kind.rawValue): \(name)" }

    /// Bytes of device memory held by live tensors and the backend's scratch buffers.
    public var bytesInUse: Int { backend.bytesInUse }

    /// What new tensors may still take on this device, and the largest one it allows.
    public var memory: DeviceMemory { backend.memory }

    /// Where the kernels' parameters came from: the table or the tuning cache (OpenCL; nil on the
    /// CPU).
    public var kernelParameterOrigin: KernelParameterOrigin? { backend.kernelParameterOrigin }

    /// Compiles every kernel program for this device now (OpenCL) and reports build times.
    public func buildAllPrograms() throws -> [ProgramBuildReport] { try backend.buildAllPrograms() }

    /// A new stream. `coreLimit`: at most this many cores per operation, where the backend
    /// places work on cores itself (the CPU; OpenCL drivers schedule their own), so that
    /// several streams working at once share the machine instead of oversubscribing it.
    public func makeStream(coreLimit: Int? = nil) throws -> Stream {
        Stream(device: self, queue: try backend.makeQueue(coreLimit: coreLimit), pool: nil)
    }

    /// A stream whose tensors come from (and go back to) `pool`.
    func makeStream(coreLimit: Int? = nil, pool: BufferPool) throws -> Stream {
        Stream(device: self, queue: try backend.makeQueue(coreLimit: coreLimit), pool: pool)
    }

    // MARK: Memory

    /// A tensor with uninitialised storage: from the stream's pool when it has one with a free
    /// storage of the size, else new; when the device is out of memory, the pool's free storage
    /// is released and the allocation tried once more.
    func allocate(_ shape: [Int], on stream: Stream?) throws -> Tensor {
        let count = shape.reduce(1, *)
        let pool = stream?.pool
        let storage: TensorStorage
        if let reused = pool?.take(count: count) {
            storage = reused
        } else {
            do {
                storage = try backend.allocate(count: count)
            } catch {
                guard let pool, pool.releaseFree() else { throw error }
                storage = try backend.allocate(count: count)
            }
        }
        return Tensor(
            shape: shape, device: self,
            buffer: DeviceBuffer(storage: storage, count: count, pool: pool))
    }

    /// A new tensor, zero-filled.
    public func zeros(_ shape: [Int], on stream: Stream? = nil) throws -> Tensor {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw SigPropError.shapeMismatch(
                operation: "zeros", detail: "negative dimension in \(shape)")
        }
        let tensor = try allocate(shape, on: stream)
        try backend.fill(
            tensor.storage, count: tensor.count, value: 0, on: try queue(stream, "zeros"))
        return tensor
    }

    /// A new tensor holding `values` (row-major).
    public func tensor(_ values: [Float], shape: [Int], on stream: Stream? = nil) throws -> Tensor {
        guard values.count == shape.reduce(1, *), shape.allSatisfy({ $0 >= 0 }) else {
            throw SigPropError.shapeMismatch(
                operation: "tensor", detail: "\(values.count) values for shape \(shape)")
        }
        let tensor = try allocate(shape, on: stream)
        try backend.write(values, to: tensor.storage, on: try queue(stream, "tensor"))
        return tensor
    }

    /// An event the host completes (`complete(_:)`): streams of this device can wait for
    /// something that happens outside it.
    public func makeUserEvent() throws -> Event { Event(try backend.makeUserEvent()) }

    /// Completes an event from `makeUserEvent()`; work waiting for it may start.
    public func complete(_ event: Event) throws {
        try backend.completeUserEvent(event.backendEvent)
    }

    /// `tensor` as a tensor of this device: itself when it is one, else a copy through the
    /// host (waits for the work enqueued on its device's default stream; callers order other
    /// streams first, e.g. by waiting for an event).
    public func transfer(_ tensor: Tensor, on stream: Stream? = nil) throws -> Tensor {
        guard tensor.device !== self else { return tensor }
        return try self.tensor(try tensor.device.read(tensor), shape: tensor.shape, on: stream)
    }

    /// Overwrites `tensor` with `values`.
    public func write(_ values: [Float], to tensor: Tensor, on stream: Stream? = nil) throws {
        try check("write", tensor)
        guard values.count == tensor.count else {
            throw SigPropError.shapeMismatch(
                operation: "write", detail: "\(values.count) values for \(tensor.shape)")
        }
        try backend.write(values, to: tensor.storage, on: try queue(stream, "write"))
    }

    /// The tensor's values, after the stream's earlier work.
    public func read(_ tensor: Tensor, on stream: Stream? = nil) throws -> [Float] {
        try check("read", tensor)
        return try backend.read(tensor.storage, count: tensor.count, on: try queue(stream, "read"))
    }

    /// Copies `source` into `destination` (same element count) on the device.
    public func copy(_ source: Tensor, to destination: Tensor, on stream: Stream? = nil) throws {
        try check("copy", source, destination)
        try requireCount("copy", destination, source.count)
        try backend.copy(
            source.storage, at: 0, to: destination.storage, at: 0, count: source.count,
            on: try queue(stream, "copy"))
    }

    /// Rows `rows` of `source` into `destination` from row `destinationRow` on (both tensors
    /// taken as rows of their first dimension, of equal width).
    public func copyRows(
        _ source: Tensor, _ rows: Range<Int>, into destination: Tensor, at destinationRow: Int,
        on stream: Stream? = nil
    ) throws {
        try check("copyRows", source, destination)
        let width = source.columns
        guard destination.columns == width, rows.lowerBound >= 0, rows.upperBound <= source.rows,
            destinationRow >= 0, destinationRow + rows.count <= destination.rows
        else {
            throw SigPropError.shapeMismatch(
                operation: "copyRows",
                detail:
                    "rows \(rows) of \(source.shape) do not fit \(destination.shape) from row "
                    + "\(destinationRow)")
        }
        try backend.copy(
            source.storage, at: rows.lowerBound * width, to: destination.storage,
            at: destinationRow * width, count: rows.count * width,
            on: try queue(stream, "copyRows"))
    }

    public func fill(_ tensor: Tensor, with value: Float, on stream: Stream? = nil) throws {
        try check("fill", tensor)
        try backend.fill(
            tensor.storage, count: tensor.count, value: value, on: try queue(stream, "fill"))
    }

    // MARK: Operations

    /// `c = act(alpha * op(a) op(b) + beta * c + bias)`, each tensor viewed as a matrix
    /// (`rows` x `columns`); `op` transposes when asked; `bias` (length N) is added to every row.
    public func gemm(
        _ a: Tensor, transposeA: Bool = false, _ b: Tensor, transposeB: Bool = false,
        into c: Tensor,
        alpha: Float = 1, beta: Float = 0, bias: Tensor? = nil, activation: Activation = .identity,
        on stream: Stream? = nil
    ) throws {
        try check("gemm", a, b, c)
        if let bias { try check("gemm", bias) }
        let (m, k) = transposeA ? (a.columns, a.rows) : (a.rows, a.columns)
        let (kb, n) = transposeB ? (b.columns, b.rows) : (b.rows, b.columns)
        guard k == kb, c.rows == m, c.columns == n else {
            throw SigPropError.shapeMismatch(
                operation: "gemm",
                detail:
                    "op(a) is \(m)x\(k) (a \(a.shape)\(transposeA ? "ᵀ" : "")), op(b) is "
                    + "\(kb)x\(n) (b \(b.shape)\(transposeB ? "ᵀ" : "")), c is \(c.shape)"
            )
        }
        if let bias { try requireCount("gemm bias", bias, n) }
        let shape = GemmShape(
            m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB, alpha: alpha,
            beta: beta, activation: activation)
        try backend.gemm(
            shape, a: a.storage, b: b.storage, c: c.storage, bias: bias?.storage,
            on: try queue(stream, "gemm"))
    }

    /// `output = act(input)` element-wise (`output` may be `input`).
    public func activate(
        _ activation: Activation, _ input: Tensor, into output: Tensor, on stream: Stream? = nil
    ) throws {
        try check("activate", input, output)
        try requireCount("activate", output, input.count)
        try backend.activate(
            activation, input: input.storage, output: output.storage, count: input.count,
            on: try queue(stream, "activate"))
    }

    /// `result = gradient * act'(z)` where `output = act(z)`: the derivative is read off the
    /// activation's output (exact for ReLU, LeakyReLU and tanh). `result` may alias `gradient`.
    public func activationGradient(
        _ activation: Activation, output: Tensor, gradient: Tensor, into result: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("activationGradient", output, gradient, result)
        try requireCount("activationGradient", gradient, output.count)
        try requireCount("activationGradient", result, output.count)
        try backend.activationGradient(
            activation, output: output.storage, gradient: gradient.storage, result: result.storage,
            count: output.count, on: try queue(stream, "activationGradient"))
    }

    /// `y = alpha * x + beta * y` element-wise.
    public func axpby(alpha: Float, _ x: Tensor, beta: Float, _ y: Tensor, on stream: Stream? = nil)
        throws
    {
        try check("axpby", x, y)
        try requireCount("axpby", y, x.count)
        try backend.axpby(
            alpha: alpha, x: x.storage, beta: beta, y: y.storage, count: x.count,
            on: try queue(stream, "axpby"))
    }

    /// `into[c] = alpha * (sum of x over every element of channel c) + beta * into[c]`, with `x`
    /// viewed as [outer, channels, inner]: column sums of a matrix (`inner` 1, the default) or
    /// per-channel sums of NCHW activations (`inner` H*W).
    public func channelSums(
        _ x: Tensor, channels: Int, inner: Int = 1, into result: Tensor, alpha: Float = 1,
        beta: Float = 0,
        on stream: Stream? = nil
    ) throws {
        try check("channelSums", x, result)
        guard channels > 0, inner > 0, x.count % (channels * inner) == 0 else {
            throw SigPropError.shapeMismatch(
                operation: "channelSums", detail: "\(x.shape) is not [outer, \(channels), \(inner)]"
            )
        }
        try requireCount("channelSums", result, channels)
        try backend.channelSums(
            x.storage, outer: x.count / (channels * inner), channels: channels, inner: inner,
            into: result.storage,
            alpha: alpha, beta: beta, on: try queue(stream, "channelSums"))
    }

    /// 2-D convolution over NCHW `input` with `weight` `[O, C, kh, kw]`, optional bias `[O]`,
    /// then `activation`, into `output` `[B, O, Ho, Wo]`.
    public func conv2d(
        _ input: Tensor, weight: Tensor, bias: Tensor? = nil, into output: Tensor,
        stride: Int = 1, padding: Int = 0, activation: Activation = .identity,
        on stream: Stream? = nil
    ) throws {
        let shape = try convShape(
            "conv2d", input: input, weight: weight, output: output, stride: stride, padding: padding
        )
        if let bias {
            try check("conv2d", bias)
            try requireCount("conv2d bias", bias, shape.outChannels)
        }
        try backend.conv2d(
            shape, input: input.storage, weight: weight.storage, bias: bias?.storage,
            output: output.storage,
            activation: activation, on: try queue(stream, "conv2d"))
    }

    /// `weightGradient = sum over batch and positions of outputGradient ⊗ input patches
    /// (+ beta * weightGradient)`; `biasGradient` likewise gets the sums of `outputGradient`.
    public func conv2dWeightGradient(
        _ input: Tensor, outputGradient: Tensor, into weightGradient: Tensor,
        biasGradient: Tensor? = nil,
        beta: Float = 0, stride: Int = 1, padding: Int = 0, on stream: Stream? = nil
    ) throws {
        let shape = try convShape(
            "conv2dWeightGradient", input: input, weight: weightGradient, output: outputGradient,
            stride: stride, padding: padding)
        if let biasGradient {
            try check("conv2dWeightGradient", biasGradient)
            try requireCount("conv2dWeightGradient bias", biasGradient, shape.outChannels)
        }
        try backend.conv2dWeightGradient(
            shape, input: input.storage, outputGradient: outputGradient.storage,
            weightGradient: weightGradient.storage, biasGradient: biasGradient?.storage,
            beta: beta, on: try queue(stream, "conv2dWeightGradient"))
    }

    /// Max or average pooling over non-overlapping `size` x `size` windows of NCHW `input`; a
    /// partial window at the edge is dropped, or with `ceil` pooled over what it covers.
    public func pool2d(
        _ kind: PoolKind, _ input: Tensor, size: Int = 2, ceil: Bool = false, into output: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("pool2d", input, output)
        guard input.shape.count == 4, size >= 1, input.shape[2] >= size, input.shape[3] >= size
        else {
            throw SigPropError.shapeMismatch(
                operation: "pool2d",
                detail: "input \(input.shape) must be NCHW and at least \(size)x\(size)")
        }
        let shape = PoolShape(
            planes: input.shape[0] * input.shape[1], height: input.shape[2], width: input.shape[3],
            size: size, ceil: ceil)
        let expected = [input.shape[0], input.shape[1], shape.outHeight, shape.outWidth]
        guard output.shape == expected else {
            throw SigPropError.shapeMismatch(
                operation: "pool2d", detail: "output is \(output.shape), expected \(expected)")
        }
        try backend.pool2d(
            kind, shape: shape, input: input.storage, output: output.storage,
            on: try queue(stream, "pool2d"))
    }

    /// `out = a * b` element-wise (`out` may alias either).
    public func multiply(_ a: Tensor, _ b: Tensor, into out: Tensor, on stream: Stream? = nil)
        throws
    {
        try check("multiply", a, b, out)
        try requireCount("multiply", b, a.count)
        try requireCount("multiply", out, a.count)
        try backend.multiply(
            a.storage, b.storage, into: out.storage, count: a.count,
            on: try queue(stream, "multiply"))
    }

    /// Normalises each group of `x` (viewed as `layout`) to zero mean and unit biased variance:
    /// `xhat = (x - mean) / sqrt(var + epsilon)`; `rstd` (one per group) keeps
    /// `1 / sqrt(var + epsilon)` for the gradient. Layer, instance and batch norm differ only
    /// in the layout (see `GroupLayout`).
    public func normalize(
        _ x: Tensor, layout: GroupLayout, into xhat: Tensor, rstd: Tensor, epsilon: Float = 1e-5,
        on stream: Stream? = nil
    ) throws {
        try check("normalize", x, xhat, rstd)
        try requireLayout("normalize", layout, x)
        try requireCount("normalize", xhat, x.count)
        try requireCount("normalize rstd", rstd, layout.groups)
        try backend.normalize(
            x.storage, layout: layout, xhat: xhat.storage, rstd: rstd.storage, epsilon: epsilon,
            on: try queue(stream, "normalize"))
    }

    /// The gradient through `normalize`: `dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`
    /// over each group. `dx` may alias `dxhat`.
    public func normalizeGradient(
        _ dxhat: Tensor, xhat: Tensor, rstd: Tensor, layout: GroupLayout, into dx: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("normalizeGradient", dxhat, xhat, rstd, dx)
        try requireLayout("normalizeGradient", layout, xhat)
        try requireCount("normalizeGradient", dxhat, xhat.count)
        try requireCount("normalizeGradient", dx, xhat.count)
        try requireCount("normalizeGradient rstd", rstd, layout.groups)
        try backend.normalizeGradient(
            dxhat.storage, xhat: xhat.storage, rstd: rstd.storage, into: dx.storage, layout: layout,
            on: try queue(stream, "normalizeGradient"))
    }

    /// `out = x * scale[c] + shift[c]` with c the channel of each element, `x` viewed as
    /// [outer, channels, inner]: a norm's affine part (per feature of [B, D]: `inner` 1).
    public func scaleShiftChannels(
        _ x: Tensor, scale: Tensor, shift: Tensor? = nil, inner: Int = 1, into out: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("scaleShiftChannels", x, scale, out)
        let channels = scale.count
        guard channels > 0, inner > 0, x.count % (channels * inner) == 0 else {
            throw SigPropError.shapeMismatch(
                operation: "scaleShiftChannels",
                detail: "\(x.shape) is not [outer, \(channels), \(inner)]")
        }
        if let shift {
            try check("scaleShiftChannels", shift)
            try requireCount("scaleShiftChannels shift", shift, channels)
        }
        try requireCount("scaleShiftChannels", out, x.count)
        try backend.scaleShiftChannels(
            x.storage, scale: scale.storage, shift: shift?.storage, into: out.storage,
            count: x.count,
            channels: channels, inner: inner, on: try queue(stream, "scaleShiftChannels"))
    }

    /// Fills `x` with normal values of mean 0 and deviation `deviation`, drawn on the device.
    /// Element i depends only on `seed` and i (counter-based: SplitMix64's finaliser of
    /// `seed + (i + 1) * 0x9E3779B97F4A7C15`, then Box–Muller's cosine branch on two 24-bit
    /// uniforms), so a stream of draws is the same on every run and independent of how the
    /// device splits the work; backends differ only in the last bits of log and cos.
    public func fillNormal(
        _ x: Tensor, deviation: Float, seed: UInt64, on stream: Stream? = nil
    ) throws {
        try check("fillNormal", x)
        try backend.fillNormal(
            x.storage, count: x.count, deviation: deviation, seed: seed,
            on: try queue(stream, "fillNormal"))
    }

    /// `factor[0] = sign * (target / s)^power`, `s` the standard deviation of `x`'s values with
    /// Bessel's correction (as `torch.std`); `sign` where `s` is 0. With `scaleShiftChannels`
    /// it rescales tensors to a deviation without reading them back (PEPITA's mirrored
    /// feedback matrices).
    public func deviationScale(
        of x: Tensor, target: Float, power: Float = 1, sign: Float = 1, into factor: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("deviationScale", x, factor)
        try requireCount("deviationScale", factor, 1)
        guard x.count > 1 else {
            throw SigPropError.shapeMismatch(
                operation: "deviationScale",
                detail: "\(x.shape) has \(x.count) value; a deviation needs at least 2")
        }
        try backend.deviationScale(
            x.storage, count: x.count, target: target, power: power, sign: sign,
            into: factor.storage, on: try queue(stream, "deviationScale"))
    }

    /// The row-wise part of the local loss (docs/signal-propagation.md): from `y` and `yy` (B x N:
    /// N = B for a block; N = K with one-hot `yy` gives the output layer's cross entropy) builds
    /// the target `mask`, `dY = (m_i softmax(Y)_ij - M_ij) / B` and each row's loss `-sum_j M_ij
    /// log_softmax(Y_i)_j / B` (their sum is the loss).
    public func localLossRows(
        _ loss: LocalLossKind = .maxAll, y: Tensor, yy: Tensor, mask: Tensor, dY: Tensor,
        rowLosses: Tensor,
        on stream: Stream? = nil
    ) throws {
        try check("localLossRows", y, yy, mask, dY, rowLosses)
        let batch = y.rows
        let columns = y.columns
        for tensor in [y, yy, mask, dY] where tensor.rows != batch || tensor.columns != columns {
            throw SigPropError.shapeMismatch(
                operation: "localLossRows",
                detail: "expected [\(batch), \(columns)], got \(tensor.shape)")
        }
        try requireCount("localLossRows rowLosses", rowLosses, batch)
        if case .topK(let k) = loss, k < 1 {
            throw SigPropError.configuration("top-k loss needs k >= 1, got \(k)")
        }
        try backend.localLossRows(
            loss, batch: batch, columns: columns, y: y.storage, yy: yy.storage, mask: mask.storage,
            dY: dY.storage,
            rowLosses: rowLosses.storage, on: try queue(stream, "localLossRows"))
    }

    /// One optimizer step on `parameter` from `gradient` by `rule`, with the parameter's
    /// state tensors in `rule.stateNames` order (updated in place).
    public func step(
        _ parameter: Tensor, gradient: Tensor, rule: UpdateRule, state: [Tensor],
        on stream: Stream? = nil
    ) throws {
        try check("step", parameter, gradient)
        try requireCount("step", gradient, parameter.count)
        try backend.step(
            rule, parameter: parameter.storage, gradient: gradient.storage,
            state: try stateStorage("step", rule, state, count: parameter.count),
            count: parameter.count, on: try queue(stream, "step"))
    }

    /// `state` checked against `rule` and a parameter of `count` entries on this device: the
    /// checks the separate step and the fused update share.
    private func stateStorage(
        _ operation: String, _ rule: UpdateRule, _ state: [Tensor], count: Int
    )
        throws -> [TensorStorage]
    {
        guard state.count == rule.stateNames.count else {
            throw SigPropError.configuration(
                "\(operation): \(rule.kind.rawValue) keeps \(rule.stateNames.count) state tensors "
                    + "(\(rule.stateNames.joined(separator: ", "))), got \(state.count)")
        }
        for tensor in state {
            try check(operation, tensor)
            try requireCount(operation, tensor, count)
        }
        guard rule.step >= 1 else {
            throw SigPropError.configuration(
                "\(operation): step must start at 1, got \(rule.step)")
        }
        return state.map(\.storage)
    }

    /// The fused weight update: `weight` [M, N] stepped by `rule` (with its `state`) with gradient
    /// Σ outputGradientᵀ · input over `pairs` (a dense layer's input and target streams: each
    /// outputGradient is [rows, M], each input [rows, N] or [rows, ...] flattened to N). The
    /// optimizer step runs in the epilogue of the gradient's product, so the gradient is never
    /// written out. One or two pairs.
    public func updateWeights(
        _ weight: Tensor, gradientPairs pairs: [(outputGradient: Tensor, input: Tensor)],
        rule: UpdateRule, state: [Tensor], on stream: Stream? = nil
    ) throws {
        guard (1...2).contains(pairs.count) else {
            throw SigPropError.shapeMismatch(
                operation: "updateWeights",
                detail: "takes one or two (outputGradient, input) pairs, got \(pairs.count)")
        }
        try check("updateWeights", weight)
        let (m, n) = (weight.rows, weight.columns)
        for (gradient, input) in pairs {
            try check("updateWeights", gradient, input)
            guard gradient.columns == m, input.columns == n, gradient.rows == input.rows else {
                throw SigPropError.shapeMismatch(
                    operation: "updateWeights",
                    detail:
                        "weight \(weight.shape) needs outputGradient [rows, \(m)] and input "
                        + "[rows, \(n)] with the same rows; got \(gradient.shape) and "
                        + "\(input.shape)"
                )
            }
        }
        let stateStorage = try stateStorage("updateWeights", rule, state, count: weight.count)
        try backend.updateWeights(
            m: m, n: n,
            pairs: pairs.map {
                WeightGradientPair(
                    outputGradient: $0.outputGradient.storage, input: $0.input.storage,
                    rows: $0.input.rows)
            },
            weight: weight.storage, rule: rule, state: stateStorage,
            on: try queue(stream, "updateWeights"))
    }

    // MARK: Checks

    func queue(_ stream: Stream?, _ operation: String) throws -> BackendQueue {
        guard let stream else { return defaultQueue }
        guard stream.device === self else {
            throw SigPropError.deviceMismatch(
                operation: operation, tensorDevice: "a stream of \(stream.device.description)",
                device: description)
        }
        return stream.queue
    }

    func check(_ operation: String, _ tensors: Tensor...) throws {
        for tensor in tensors where tensor.device !== self {
            throw SigPropError.deviceMismatch(
                operation: operation, tensorDevice: tensor.device.description, device: description)
        }
    }

    private func requireLayout(_ operation: String, _ layout: GroupLayout, _ tensor: Tensor) throws
    {
        guard layout.outer > 0, layout.groups > 0, layout.inner > 0, layout.count == tensor.count
        else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "\(tensor.shape) is not [outer \(layout.outer), groups \(layout.groups), "
                    + "inner \(layout.inner)]"
            )
        }
    }

    func requireCount(_ operation: String, _ tensor: Tensor, _ count: Int) throws {
        guard tensor.count == count else {
            throw SigPropError.shapeMismatch(
                operation: operation, detail: "tensor \(tensor.shape) must hold \(count) values")
        }
    }

    private func convShape(
        _ operation: String, input: Tensor, weight: Tensor, output: Tensor, stride: Int,
        padding: Int
    ) throws -> ConvShape {
        try check(operation, input, weight, output)
        guard input.shape.count == 4, weight.shape.count == 4, input.shape[1] == weight.shape[1]
        else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "input \(input.shape) must be [B, C, H, W] and weight \(weight.shape) [O, C, "
                    + "kh, kw] with the same C"
            )
        }
        guard stride >= 1, padding >= 0 else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail: "stride \(stride) must be >= 1 and padding \(padding) >= 0")
        }
        let shape = ConvShape(
            batch: input.shape[0], inChannels: input.shape[1], height: input.shape[2],
            width: input.shape[3],
            outChannels: weight.shape[0], kernelHeight: weight.shape[2],
            kernelWidth: weight.shape[3],
            stride: stride, padding: padding)
        guard input.shape[2] + 2 * padding >= shape.kernelHeight,
            input.shape[3] + 2 * padding >= shape.kernelWidth
        else {
            throw SigPropError.shapeMismatch(
                operation: operation,
                detail:
                    "input \(input.shape) with padding \(padding) is smaller than the kernel "
                    + "\(weight.shape)"
            )
        }
        let expected = [shape.batch, shape.outChannels, shape.outHeight, shape.outWidth]
        guard output.shape == expected else {
            throw SigPropError.shapeMismatch(
                operation: operation, detail: "output is \(output.shape), expected \(expected)")
        }
        return shape
    }
}
