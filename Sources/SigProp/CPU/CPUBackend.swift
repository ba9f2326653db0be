import CBLAS
import Dispatch
import Foundation
import Synchronization

/// Host memory behind a CPU tensor.
final class CPUBuffer: TensorStorage, @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    let counter: MemoryCounter

    /// Uninitialised: `Device` fills every new tensor on its stream. Nil when the host cannot
    /// give the memory (`malloc` says so, where Swift's own allocation would trap).
    init?(count: Int, counter: MemoryCounter) {
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(
            by: MemoryLayout<Float>.size)
        guard !overflow, let memory = malloc(bytes) else { return nil }
        self.count = count
        self.counter = counter
        pointer = memory.bindMemory(to: Float.self, capacity: max(count, 1))
        counter.add(count * MemoryLayout<Float>.size)
    }

    deinit {
        free(pointer)
        counter.add(-count * MemoryLayout<Float>.size)
    }
}

/// A serial worker: operations run in order, off the caller's thread, as on an OpenCL queue.
/// Each queue has a thread of its own that waits for work with `Parking` (a Dispatch queue
/// woke a thread for every hand-off, 20-250 µs here, more than a small product takes).
final class CPUQueue: BackendQueue, @unchecked Sendable {
    /// The queue's thread and its work; shared with the thread, which ends after the queue
    /// is released and the work is done.
    private final class Worker: @unchecked Sendable {
        let pending = Mutex<(work: [@Sendable () -> Void], posted: Int, closed: Bool)>(
            ([], 0, false))
        /// `pending.posted`, readable without the lock while the thread spins.
        let posted = Synchronization.Atomic<Int>(0)
        let parking = Parking()

        func post(_ work: (@Sendable () -> Void)?) {
            pending.withLock {
                if let work { $0.work.append(work) } else { $0.closed = true }
                $0.posted += 1
                posted.store($0.posted, ordering: .sequentiallyConsistent)
            }
            parking.notify()
        }

        func serve() {
            var taken = 0
            while true {
                parking.wait { posted.load(ordering: .sequentiallyConsistent) != taken }
                var (work, count, closed) = pending.withLock { state in
                    defer { state.work.removeAll(keepingCapacity: true) }
                    return (state.work, state.posted, state.closed)
                }
                taken = count
                // Each closure is let go before the next runs: what it captured (tensor storage)
                // is released before any later completion wakes a waiting thread, so the
                // thread that synchronizes sees the storage it dropped gone from `bytesInUse`.
                for index in work.indices {
                    let item = work[index]
                    work[index] = {}
                    item()
                }
                if closed { return }
            }
        }
    }

    private let worker = Worker()
    var kernelLog: KernelLog?
    /// Cores each operation of this queue may use (nil: all).
    let coreLimit: Int?

    init(label: String, coreLimit: Int?) {
        self.coreLimit = coreLimit
        let thread = Thread { [worker] in worker.serve() }
        thread.name = label
        thread.start()
    }

    deinit { worker.post(nil) }

    /// Operations count as holding a core while they run (`Parking`); waits for another
    /// queue's event do not.
    func enqueue(_ work: @escaping @Sendable () -> Void) {
        guard let coreLimit else { return worker.post { Parking.occupying(work) } }
        worker.post {
            Parking.occupying {
                CPUKernels.$cores.withValue(min(coreLimit, CPUKernels.cores), operation: work)
            }
        }
    }

    /// Runs `body` after the work already queued and returns its result.
    func sync<T>(_ body: @escaping @Sendable () -> T) -> T {
        let result = SyncResult<T>()
        // Two closures: `body` and what it captured are let go before the caller wakes.
        worker.post { result.value = body() }
        worker.post { result.done.complete() }
        result.done.wait()
        return result.value!
    }

    func record() throws -> BackendEvent {
        let event = CPUEvent()
        worker.post { event.complete() }
        return event
    }

    func wait(for event: BackendEvent) throws {
        guard let event = event as? CPUEvent else {
            throw SigPropError.configuration(
                "a CPU stream cannot wait for an event of another backend")
        }
        worker.post { event.completion.wait() }
    }

    func synchronize() throws { sync {} }
}

/// A `sync` call's result: written before `done` completes, read after waiting for it.
private final class SyncResult<T>: @unchecked Sendable {
    var value: T?
    let done = Completion()
}

final class CPUEvent: BackendEvent, @unchecked Sendable {
    let completion = Completion()
    /// Set before completion, read after waiting for it.
    var nanoseconds: UInt64 = 0
    /// Stamps the time and releases whoever waits.
    func complete() {
        nanoseconds = DispatchTime.now().uptimeNanoseconds
        completion.complete()
    }
    func wait() throws { completion.wait() }
    var isComplete: Bool { completion.isComplete }
    func completionNanoseconds() throws -> UInt64 { nanoseconds }
}

/// The CPU fallback: OpenBLAS for matrix products, plain Swift loops for the rest.
final class CPUBackend: Backend, @unchecked Sendable {
    let kind = BackendKind.cpu
    let deviceDescription: String
    let capabilities: DeviceCapabilities
    private let queueCount = Synchronization.Atomic<Int>(0)
    /// Cores this device may use (all of them, or a share when the CPU is split into devices).
    let cores: Int
    private let limited: Bool

    /// `part`: which share of a split CPU this device is, for its name (e.g. "part 1 of 2").
    /// A process bound to some of the cores (`taskset`, `mpirun`'s binding of ranks) uses as
    /// many threads as it has cores; the numbers stay those of the whole machine.
    init(cores: Int? = nil, part: String? = nil) {
        let machine = ProcessInfo.processInfo.activeProcessorCount
        let available = Self.allowedCores
        self.cores = max(1, min(cores ?? available, available))
        limited = self.cores < machine
        deviceDescription =
            "CPU\(part.map { " \($0)" } ?? "") (OpenBLAS \(OpenBLASKernels.runningCore) kernels, "
            + "\(limited ? "\(self.cores) of \(machine)" : "\(machine)") cores)"
        // No fused weight update by default: OpenBLAS has no epilogue, and its panel-wise
        // twin is no faster than the product and Adam (docs/performance.md, `local_step`).
        capabilities = DeviceCapabilities(
            asynchronous: true, concurrentStreams: true, profiling: false, computeUnits: self.cores)
        // Products are split over the cores by CPUKernels.gemm; see there.
        openblas_set_num_threads(1)
    }

    /// The cores this process may run on: its CPU affinity (Linux's `Cpus_allowed` mask, in
    /// hexadecimal groups), at most the machine's cores (all of them where it cannot be read).
    static var allowedCores: Int {
        let machine = ProcessInfo.processInfo.activeProcessorCount
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: {
                $0.hasPrefix("Cpus_allowed:")
            })
        else { return machine }
        let count = line.dropFirst("Cpus_allowed:".count).reduce(0) { count, digit in
            count + (digit.hexDigitValue ?? 0).nonzeroBitCount
        }
        return max(1, min(count, machine))
    }

    /// Nothing to compile: the CPU operations are Swift and OpenBLAS.
    func buildAllPrograms() throws -> [ProgramBuildReport] { [] }
    var kernelParameterOrigin: KernelParameterOrigin? { nil }

    let counter = MemoryCounter()
    var bytesInUse: Int { counter.value }

    var memory: DeviceMemory { DeviceMemory.host() }

    func allocate(count: Int) throws -> TensorStorage {
        guard let buffer = CPUBuffer(count: count, counter: counter) else {
            let host = memory
            let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
            throw SigPropError.outOfMemory(
                device: deviceDescription, requestedBytes: overflow ? Int.max : bytes,
                limitBytes: host.freeBytes, detail: "\(host.source); malloc failed")
        }
        return buffer
    }

    func makeQueue(coreLimit: Int?) throws -> BackendQueue {
        let limit = limited ? min(coreLimit ?? cores, cores) : coreLimit
        return CPUQueue(
            label: "sigprop.cpu.queue\(queueCount.add(1, ordering: .relaxed).newValue)",
            coreLimit: limit)
    }

    func makeUserEvent() throws -> BackendEvent { CPUEvent() }

    func completeUserEvent(_ event: BackendEvent) throws {
        guard let event = event as? CPUEvent else {
            throw SigPropError.configuration("a CPU user event must come from the CPU backend")
        }
        event.complete()
    }

    /// Enqueues `work`; with a kernel log on the queue, timed under the calling operation's name.
    private func run(
        _ queue: BackendQueue, name: String = #function, _ work: @escaping @Sendable () -> Void
    ) {
        let queue = queue as! CPUQueue
        guard let log = queue.kernelLog else { return queue.enqueue(work) }
        let operation = String(name.prefix { $0 != "(" })
        queue.enqueue {
            let start = DispatchTime.now().uptimeNanoseconds
            work()
            log.add(operation, start: start, end: DispatchTime.now().uptimeNanoseconds)
        }
    }

    private func buf(_ storage: TensorStorage) -> CPUBuffer { storage as! CPUBuffer }

    func write(_ values: [Float], to storage: TensorStorage, on queue: BackendQueue) throws {
        let destination = buf(storage)
        run(queue) {
            values.withUnsafeBufferPointer {
                destination.pointer.update(from: $0.baseAddress!, count: values.count)
            }
        }
    }

    func read(_ storage: TensorStorage, count: Int, on queue: BackendQueue) throws -> [Float] {
        let source = buf(storage)
        return (queue as! CPUQueue).sync {
            Array(UnsafeBufferPointer(start: source.pointer, count: count))
        }
    }

    func copy(
        _ source: TensorStorage, at sourceOffset: Int, to destination: TensorStorage,
        at destinationOffset: Int, count: Int, on queue: BackendQueue
    ) throws {
        let (s, d) = (buf(source), buf(destination))
        run(queue) {
            (d.pointer + destinationOffset).update(from: s.pointer + sourceOffset, count: count)
        }
    }

    func fill(_ storage: TensorStorage, count: Int, value: Float, on queue: BackendQueue) throws {
        let d = buf(storage)
        run(queue) { d.pointer.update(repeating: value, count: count) }
    }

    func gemm(
        _ shape: GemmShape, a: TensorStorage, b: TensorStorage, c: TensorStorage,
        bias: TensorStorage?, on queue: BackendQueue
    ) throws {
        let (a, b, c, bias) = (buf(a), buf(b), buf(c), bias.map(buf))
        run(queue) {
            CPUKernels.gemm(shape, a: a.pointer, b: b.pointer, c: c.pointer, bias: bias?.pointer)
        }
    }

    func activate(
        _ activation: Activation, input: TensorStorage, output: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        let (x, y) = (buf(input), buf(output))
        run(queue) { CPUKernels.activate(x.pointer, into: y.pointer, count: count, activation) }
    }

    func activationGradient(
        _ activation: Activation, output: TensorStorage, gradient: TensorStorage,
        result: TensorStorage, count: Int, on queue: BackendQueue
    ) throws {
        let (a, g, r) = (buf(output), buf(gradient), buf(result))
        run(queue) {
            CPUKernels.activationGradient(
                a.pointer, gradient: g.pointer, into: r.pointer, count: count, activation)
        }
    }

    func axpby(
        alpha: Float, x: TensorStorage, beta: Float, y: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        let (x, y) = (buf(x), buf(y))
        run(queue) {
            CPUKernels.axpby(alpha: alpha, x.pointer, beta: beta, y.pointer, count: count)
        }
    }

    func channelSums(
        _ x: TensorStorage, outer: Int, channels: Int, inner: Int, into: TensorStorage,
        alpha: Float, beta: Float, on queue: BackendQueue
    ) throws {
        let (x, out) = (buf(x), buf(into))
        run(queue) {
            CPUKernels.channelSums(
                x.pointer, outer: outer, channels: channels, inner: inner, into: out.pointer,
                alpha: alpha, beta: beta)
        }
    }

    func conv2d(
        _ shape: ConvShape, input: TensorStorage, weight: TensorStorage, bias: TensorStorage?,
        output: TensorStorage, activation: Activation, on queue: BackendQueue
    ) throws {
        let (x, w, b, y) = (buf(input), buf(weight), bias.map(buf), buf(output))
        run(queue) {
            CPUKernels.conv2d(
                shape, input: x.pointer, weight: w.pointer, bias: b?.pointer, output: y.pointer,
                activation: activation)
        }
    }

    func conv2dWeightGradient(
        _ shape: ConvShape, input: TensorStorage, outputGradient: TensorStorage,
        weightGradient: TensorStorage, biasGradient: TensorStorage?, beta: Float,
        on queue: BackendQueue
    ) throws {
        let (x, dz, dw, db) = (
            buf(input), buf(outputGradient), buf(weightGradient), biasGradient.map(buf)
        )
        run(queue) {
            CPUKernels.conv2dWeightGradient(
                shape, input: x.pointer, outputGradient: dz.pointer, weightGradient: dw.pointer,
                biasGradient: db?.pointer, beta: beta)
        }
    }

    func pool2d(
        _ kind: PoolKind, shape: PoolShape, input: TensorStorage, output: TensorStorage,
        on queue: BackendQueue
    ) throws {
        let (x, y) = (buf(input), buf(output))
        run(queue) { CPUKernels.pool2d(kind, shape, input: x.pointer, output: y.pointer) }
    }

    func multiply(
        _ a: TensorStorage, _ b: TensorStorage, into: TensorStorage, count: Int,
        on queue: BackendQueue
    ) throws {
        let (a, b, out) = (buf(a), buf(b), buf(into))
        run(queue) { for i in 0..<count { out.pointer[i] = a.pointer[i] * b.pointer[i] } }
    }

    func normalize(
        _ x: TensorStorage, layout: GroupLayout, xhat: TensorStorage, rstd: TensorStorage,
        epsilon: Float, on queue: BackendQueue
    ) throws {
        let (x, xhat, rstd) = (buf(x), buf(xhat), buf(rstd))
        run(queue) {
            CPUKernels.normalize(
                x.pointer, layout: layout, xhat: xhat.pointer, rstd: rstd.pointer, epsilon: epsilon)
        }
    }

    func normalizeGradient(
        _ dxhat: TensorStorage, xhat: TensorStorage, rstd: TensorStorage, into: TensorStorage,
        layout: GroupLayout, on queue: BackendQueue
    ) throws {
        let (g, xhat, rstd, dx) = (buf(dxhat), buf(xhat), buf(rstd), buf(into))
        run(queue) {
            CPUKernels.normalizeGradient(
                g.pointer, xhat: xhat.pointer, rstd: rstd.pointer, into: dx.pointer, layout: layout)
        }
    }

    func fillNormal(
        _ x: TensorStorage, count: Int, deviation: Float, seed: UInt64, on queue: BackendQueue
    ) throws {
        let x = buf(x)
        run(queue) {
            CPUKernels.fillNormal(x.pointer, count: count, deviation: deviation, seed: seed)
        }
    }

    func deviationScale(
        _ x: TensorStorage, count: Int, target: Float, power: Float, sign: Float,
        into factor: TensorStorage, on queue: BackendQueue
    ) throws {
        let (x, factor) = (buf(x), buf(factor))
        run(queue) {
            factor.pointer[0] = CPUKernels.deviationScale(
                x.pointer, count: count, target: target, power: power, sign: sign)
        }
    }

    func scaleShiftChannels(
        _ x: TensorStorage, scale: TensorStorage, shift: TensorStorage?, into: TensorStorage,
        count: Int, channels: Int, inner: Int, on queue: BackendQueue
    ) throws {
        let (x, scale, shift, out) = (buf(x), buf(scale), shift.map(buf), buf(into))
        run(queue) {
            CPUKernels.scaleShiftChannels(
                x.pointer, scale: scale.pointer, shift: shift?.pointer, into: out.pointer,
                count: count,
                channels: channels, inner: inner)
        }
    }

    func localLossRows(
        _ loss: LocalLossKind, batch: Int, columns: Int, y: TensorStorage, yy: TensorStorage,
        mask: TensorStorage, dY: TensorStorage, rowLosses: TensorStorage, on queue: BackendQueue
    ) throws {
        let (y, yy, mask, dY, rowLosses) = (buf(y), buf(yy), buf(mask), buf(dY), buf(rowLosses))
        run(queue) {
            CPUKernels.localLossRows(
                loss, batch: batch, columns: columns, y: y.pointer, yy: yy.pointer,
                mask: mask.pointer, dY: dY.pointer, rowLosses: rowLosses.pointer)
        }
    }

    func forwardForwardRows(
        _ p: ForwardForwardRowShape, a: TensorStorage, normalized: TensorStorage,
        sumSquares: TensorStorage, gradient: TensorStorage?, rowLosses: TensorStorage?,
        peer: TensorStorage?, on queue: BackendQueue
    ) throws {
        let (a, out, ss) = (buf(a), buf(normalized), buf(sumSquares))
        let (g, losses, peer) = (gradient.map(buf), rowLosses.map(buf), peer.map(buf))
        run(queue) {
            CPUKernels.forwardForwardRows(
                p, a: a.pointer, normalized: out.pointer, sumSquares: ss.pointer,
                gradient: g?.pointer, rowLosses: losses?.pointer, peer: peer?.pointer)
        }
    }

    func forwardForwardRelabel(
        _ p: ForwardForwardRelabelShape, a: TensorStorage, inputs: TensorStorage,
        neutral: TensorStorage?, weight: TensorStorage, bias: TensorStorage,
        plan: TensorStorage, into: TensorStorage, on queue: BackendQueue
    ) throws {
        let (a, z, w, b, plan, out) = (
            buf(a), buf(inputs), buf(weight), buf(bias), buf(plan), buf(into)
        )
        let neutral = neutral.map(buf)
        run(queue) {
            CPUKernels.forwardForwardRelabel(
                p, a: a.pointer, inputs: z.pointer, neutral: neutral?.pointer, weight: w.pointer,
                bias: b.pointer, plan: plan.pointer, into: out.pointer)
        }
    }

    func forwardForwardRelabelGradient(
        _ p: ForwardForwardRelabelShape, gradient: TensorStorage, inputs: TensorStorage,
        plan: TensorStorage, into weightGradient: TensorStorage, on queue: BackendQueue
    ) throws {
        let (g, z, plan, dw) = (buf(gradient), buf(inputs), buf(plan), buf(weightGradient))
        run(queue) {
            CPUKernels.forwardForwardRelabelGradient(
                p, gradient: g.pointer, inputs: z.pointer, plan: plan.pointer,
                into: dw.pointer)
        }
    }

    func forwardForwardPeer(
        a: TensorStorage, columns: Int, positives: Int, runningMean: TensorStorage,
        peer: TensorStorage, momentum: Float, weight: Float, on queue: BackendQueue
    ) throws {
        let (a, mean, peer) = (buf(a), buf(runningMean), buf(peer))
        run(queue) {
            CPUKernels.forwardForwardPeer(
                a: a.pointer, columns: columns, positives: positives, runningMean: mean.pointer,
                peer: peer.pointer, momentum: momentum, weight: weight)
        }
    }

    func lifForward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, current: TensorStorage,
        membrane: TensorStorage?, spikes: TensorStorage, representation: TensorStorage,
        rate: TensorStorage, stepRepresentation: TensorStorage?, neuron: NeuronStorage,
        steps chunk: Range<Int>, state: TensorStorage?, on queue: BackendQueue
    ) throws {
        let (current, membrane, spikes) = (buf(current), membrane.map(buf), buf(spikes))
        let state = state.map(buf)
        let (representation, rate) = (buf(representation), buf(rate))
        let steps = stepRepresentation.map(buf)
        let (beta, threshold) = (buf(neuron.beta), buf(neuron.threshold))
        run(queue) {
            CPUKernels.lifForward(
                dynamics, plane: plane, constantCurrent: constantCurrent,
                current: current.pointer, membrane: membrane?.pointer, spikes: spikes.pointer,
                representation: representation.pointer, rate: rate.pointer,
                stepRepresentation: steps?.pointer, betaValue: beta.pointer,
                thresholdValue: threshold.pointer, steps: chunk, state: state?.pointer)
        }
    }

    func lifBackward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, perStep: Bool,
        membrane: TensorStorage?, spikes: TensorStorage, gradient: TensorStorage,
        currentGradient: TensorStorage, neuron: NeuronStorage, neuronPartials: TensorStorage?,
        on queue: BackendQueue
    ) throws {
        let (membrane, spikes) = (membrane.map(buf), buf(spikes))
        let (gradient, result) = (buf(gradient), buf(currentGradient))
        let (beta, threshold, partials) = (
            buf(neuron.beta), buf(neuron.threshold), neuronPartials.map(buf)
        )
        run(queue) {
            CPUKernels.lifBackward(
                dynamics, plane: plane, constantCurrent: constantCurrent, perStep: perStep,
                membrane: membrane?.pointer, spikes: spikes.pointer, gradient: gradient.pointer,
                currentGradient: result.pointer, betaValue: beta.pointer,
                thresholdValue: threshold.pointer, neuronPartials: partials?.pointer)
        }
    }

    func lifSurrogateGradient(
        _ dynamics: LIFDynamics, count: Int, plane: Int, membrane: TensorStorage,
        gradient: TensorStorage, weight: TensorStorage, into out: TensorStorage,
        neuron: NeuronStorage, on queue: BackendQueue
    ) throws {
        let (membrane, gradient, weight, out) = (
            buf(membrane), buf(gradient), buf(weight), buf(out)
        )
        let threshold = buf(neuron.threshold)
        run(queue) {
            CPUKernels.lifSurrogateGradient(
                dynamics, count: count, plane: plane, membrane: membrane.pointer,
                gradient: gradient.pointer, weight: weight.pointer, out: out.pointer,
                thresholdValue: threshold.pointer)
        }
    }

    func spikeEncode(
        _ encoding: SpikeEncoding, steps: Int, chunk: Range<Int>, plane: Int, seed: UInt32,
        images: TensorStorage, trains: TensorStorage, on queue: BackendQueue
    ) throws {
        let (images, trains) = (buf(images), buf(trains))
        run(queue) {
            CPUKernels.spikeEncode(
                encoding, steps: steps, chunk: chunk, plane: plane, seed: seed,
                images: images.pointer, trains: trains.pointer)
        }
    }

    func step(
        _ rule: UpdateRule, parameter: TensorStorage, gradient: TensorStorage,
        state: [TensorStorage], count: Int, on queue: BackendQueue
    ) throws {
        let (p, g, state) = (buf(parameter), buf(gradient), state.map(buf))
        run(queue) {
            CPUKernels.parallelChunks(count) { range in
                let i = range.lowerBound
                CPUKernels.stepEntries(
                    rule, parameter: p.pointer + i, gradient: g.pointer + i,
                    state: state.map { $0.pointer + i }, count: range.count)
            }
        }
    }

    func updateWeights(
        m: Int, n: Int, pairs: [WeightGradientPair], weight: TensorStorage, rule: UpdateRule,
        state: [TensorStorage], on queue: BackendQueue
    ) throws {
        let operands = pairs.map { (buf($0.outputGradient), buf($0.input), $0.rows) }
        let (w, state) = (buf(weight), state.map(buf))
        let step: @Sendable (Range<Int>, UnsafePointer<Float>) -> Void = { range, g in
            let i = range.lowerBound
            CPUKernels.stepEntries(
                rule, parameter: w.pointer + i, gradient: g, state: state.map { $0.pointer + i },
                count: range.count)
        }
        run(queue) {
            CPUKernels.updateWeights(
                m: m, n: n,
                pairs: operands.map {
                    CPUKernels.UpdatePair(a: $0.0.pointer, b: $0.1.pointer, rows: $0.2)
                }, step: step)
        }
    }
}
