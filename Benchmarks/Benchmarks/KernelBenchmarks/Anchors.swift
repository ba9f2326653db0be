// The anchors: what a tuned library does with the same shapes. `clblast` runs CLBlast on its
// own context and queue on the same OpenCL device as `opencl`; `openblas` calls cblas_sgemm
// on host memory, without SigProp's CPU backend around it.

import CAnchors
import SigProp

// MARK: OpenBLAS

/// Host memory that outlives the closures capturing it.
final class HostBuffer: @unchecked Sendable {
    let pointer: UnsafeMutableBufferPointer<Float>

    init(_ values: [Float]) {
        pointer = .allocate(capacity: values.count)
        _ = pointer.initialize(from: values)
    }

    deinit { pointer.deallocate() }

    // Never empty: every shape is non-zero.
    var base: UnsafeMutablePointer<Float> { pointer.baseAddress! }
    var values: [Float] { Array(pointer) }
}

/// `c = op(a) op(b)` with OpenBLAS, row-major, leading dimensions of the matrices as stored.
func cblasGemm(_ shape: GemmCase, _ a: HostBuffer, _ b: HostBuffer, _ c: HostBuffer) {
    cblas_sgemm(
        CblasRowMajor, shape.transposeA ? CblasTrans : CblasNoTrans,
        shape.transposeB ? CblasTrans : CblasNoTrans,
        blasint(shape.m), blasint(shape.n), blasint(shape.k), 1,
        a.base, blasint(shape.aShape[1]), b.base, blasint(shape.bShape[1]), 0, c.base,
        blasint(shape.n))
}

func openblasGemm(_ shape: GemmCase) -> () throws -> Void {
    let a = HostBuffer(randomValues(shape.m * shape.k, seed: 1))
    let b = HostBuffer(randomValues(shape.k * shape.n, seed: 2))
    let c = HostBuffer([Float](repeating: 0, count: shape.m * shape.n))
    return { cblasGemm(shape, a, b, c) }
}

// MARK: CLBlast

/// A context and in-order queue of our own on the device SigProp's `opencl` benchmarks use.
final class CLBlastQueue: @unchecked Sendable {
    let context: cl_context
    var queue: cl_command_queue?

    init(entry: OpenCLDeviceEntry) throws {
        var platformCount: cl_uint = 0
        try clCheck(clGetPlatformIDs(0, nil, &platformCount), "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try clCheck(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")
        guard platforms.indices.contains(entry.info.platformIndex) else {
            throw BenchmarkSetupError(
                "OpenCL platform \(entry.info.platformIndex) of \(entry.info.name) is gone")
        }
        let platform = platforms[entry.info.platformIndex]
        var deviceCount: cl_uint = 0
        try clCheck(
            clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount),
            "clGetDeviceIDs")
        var devices = [cl_device_id?](repeating: nil, count: Int(deviceCount))
        try clCheck(
            clGetDeviceIDs(
                platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &devices, nil),
            "clGetDeviceIDs")
        guard devices.indices.contains(entry.info.deviceIndex) else {
            throw BenchmarkSetupError(
                "OpenCL device \(entry.info.deviceIndex) of platform \(entry.info.platformIndex) is gone"
            )
        }
        var device = devices[entry.info.deviceIndex]

        var nameLength = 0
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(CL_DEVICE_NAME), 0, nil, &nameLength),
            "clGetDeviceInfo")
        var name = [CChar](repeating: 0, count: nameLength + 1)
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(CL_DEVICE_NAME), nameLength, &name, nil),
            "clGetDeviceInfo")
        let found = String(
            decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard found == entry.info.name else {
            throw BenchmarkSetupError(
                "OpenCL device order changed: expected \(entry.info.name), found \(found)")
        }

        var status: cl_int = 0
        guard let context = clCreateContext(nil, 1, &device, nil, nil, &status),
            status == CL_SUCCESS
        else {
            throw BenchmarkSetupError("clCreateContext failed with OpenCL status \(status)")
        }
        self.context = context
        queue = clCreateCommandQueue(context, device, 0, &status)
        guard queue != nil, status == CL_SUCCESS else {
            clReleaseContext(context)
            throw BenchmarkSetupError("clCreateCommandQueue failed with OpenCL status \(status)")
        }
    }

    deinit {
        clFinish(queue)
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    func buffer(_ values: [Float]) throws -> CLBlastBuffer {
        var status: cl_int = 0
        var copy = values
        let mem = clCreateBuffer(
            context, cl_mem_flags(CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR),
            values.count * MemoryLayout<Float>.stride, &copy, &status)
        guard let mem, status == CL_SUCCESS else {
            throw BenchmarkSetupError(
                "clCreateBuffer of \(values.count) floats failed with OpenCL status \(status)")
        }
        return CLBlastBuffer(mem: mem, count: values.count, owner: self)
    }

    func read(_ buffer: CLBlastBuffer) throws -> [Float] {
        var values = [Float](repeating: 0, count: buffer.count)
        try clCheck(
            clEnqueueReadBuffer(
                queue, buffer.mem, cl_bool(CL_TRUE), 0, buffer.count * MemoryLayout<Float>.stride,
                &values, 0, nil, nil),
            "clEnqueueReadBuffer")
        return values
    }

    func finish() throws { try clCheck(clFinish(queue), "clFinish") }

}

final class CLBlastBuffer: @unchecked Sendable {
    let mem: cl_mem
    let count: Int
    let owner: CLBlastQueue  // released before the context

    init(mem: cl_mem, count: Int, owner: CLBlastQueue) {
        self.mem = mem
        self.count = count
        self.owner = owner
    }

    deinit { clReleaseMemObject(mem) }
}

func clCheck(_ status: cl_int, _ call: String) throws {
    guard status == CL_SUCCESS else {
        throw BenchmarkSetupError("\(call) failed with OpenCL status \(status)")
    }
}

func clblastCheck(_ status: CLBlastStatusCode, _ call: String) throws {
    guard status == CLBlastSuccess else {
        throw BenchmarkSetupError("\(call) failed with CLBlast status \(status.rawValue)")
    }
}

/// The anchor's glue (layouts, leading dimensions) is ours, so its first result is checked
/// against a reference before it is timed; that run also builds CLBlast's kernels.
func requireClose(_ got: [Float], _ expected: [Float], _ what: String) throws {
    let scale = max(1, expected.map(abs).max() ?? 0)
    let error = zip(got, expected).map { abs($0 - $1) }.max() ?? 0
    guard got.count == expected.count, error <= 1e-3 * scale else {
        throw BenchmarkSetupError(
            "\(what): result differs from the reference by \(error) (scale \(scale))")
    }
}

func clblastGemm(_ shape: GemmCase) throws -> () throws -> Void {
    let cl = try CLBlastQueue(entry: try openCLEntry())
    let aValues = randomValues(shape.m * shape.k, seed: 1)
    let bValues = randomValues(shape.k * shape.n, seed: 2)
    let a = try cl.buffer(aValues)
    let b = try cl.buffer(bValues)
    let c = try cl.buffer([Float](repeating: 0, count: shape.m * shape.n))
    let run = {
        try clblastCheck(
            CLBlastSgemm(
                CLBlastLayoutRowMajor, shape.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo,
                shape.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo,
                shape.m, shape.n, shape.k, 1,
                a.mem, 0, shape.aShape[1], b.mem, 0, shape.bShape[1], 0, c.mem, 0, shape.n,
                &cl.queue, nil),
            "CLBlastSgemm \(shape)")
        try cl.finish()
    }
    try run()
    let reference = HostBuffer([Float](repeating: 0, count: shape.m * shape.n))
    cblasGemm(shape, HostBuffer(aValues), HostBuffer(bValues), reference)
    try requireClose(try cl.read(c), reference.values, "CLBlastSgemm \(shape)")
    return run
}

/// CLBlast's convgemm (im2col and a batched product): NCHW input, [O, C, k, k] weights,
/// cross-correlation as PyTorch and SigProp define convolution.
func clblastConv(_ shape: ConvCase) throws -> () throws -> Void {
    let cl = try CLBlastQueue(entry: try openCLEntry())
    let inputValues = randomValues(shape.inputShape.reduce(1, *), seed: 1)
    let weightValues = randomValues(shape.weightShape.reduce(1, *), seed: 2)
    let input = try cl.buffer(inputValues)
    let weight = try cl.buffer(weightValues)
    let output = try cl.buffer([Float](repeating: 0, count: shape.outputShape.reduce(1, *)))
    let run = {
        try clblastCheck(
            CLBlastSconvgemm(
                CLBlastKernelModeCrossCorrelation, shape.inChannels, shape.height, shape.width,
                shape.kernel, shape.kernel,
                shape.padding, shape.padding, 1, 1, 1, 1, shape.outChannels, shape.batch,
                input.mem, 0, weight.mem, 0, output.mem, 0, &cl.queue, nil),
            "CLBlastSconvgemm \(shape)")
        try cl.finish()
    }
    try run()
    let cpu = try Device.cpu()
    let reference = try cpu.zeros(shape.outputShape)
    try cpu.conv2d(
        try cpu.tensor(inputValues, shape: shape.inputShape),
        weight: try cpu.tensor(weightValues, shape: shape.weightShape),
        into: reference, padding: shape.padding)
    try requireClose(try cl.read(output), try cpu.read(reference), "CLBlastSconvgemm \(shape)")
    return run
}
