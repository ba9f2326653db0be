/// What a backend implements: an allocator, queues with events, and the operations, on raw
/// storage with shapes already checked by `Device`. The OpenCL and CPU backends are the two
/// implementations; nothing outside them asks which one it runs on.
protocol Backend: AnyObject, Sendable {
    var kind: BackendKind { get }
    var deviceDescription: String { get }
    var capabilities: DeviceCapabilities { get }

    /// Where the kernels' compile-time parameters came from (nil: the backend has none).
    var kernelParameterOrigin: KernelParameterOrigin? { get }

    /// Compiles every kernel program now rather than on first use; reports build times.
    func buildAllPrograms() throws -> [ProgramBuildReport]

    /// Bytes of tensor storage (and backend scratch) alive on the device.
    var bytesInUse: Int { get }
    /// What new tensors may still take (read when asked: the host's figure changes).
    var memory: DeviceMemory { get }

    func allocate(count: Int) throws -> TensorStorage
    /// A new queue; `coreLimit` bounds the cores one operation uses where the backend
    /// schedules cores itself (the CPU), so concurrent stage workers don't oversubscribe.
    func makeQueue(coreLimit: Int?) throws -> BackendQueue
    /// An event completed by the host (`completeUserEvent`), for work that waits on something
    /// outside the device, such as a copy from another device.
    func makeUserEvent() throws -> BackendEvent
    func completeUserEvent(_ event: BackendEvent) throws

    /// Host -> device; returns when `values` may be reused.
    func write(_ values: [Float], to storage: TensorStorage, on queue: BackendQueue) throws
    /// Device -> host; waits for the queue's earlier work.
    func read(_ storage: TensorStorage, count: Int, on queue: BackendQueue) throws -> [Float]
    /// `count` values from `source` at `sourceOffset` to `destination` at
    /// `destinationOffset` (offsets in values).
    func copy(
        _ source: TensorStorage, at sourceOffset: Int, to destination: TensorStorage,
        at destinationOffset: Int, count: Int, on queue: BackendQueue) throws

    func fill(_ storage: TensorStorage, count: Int, value: Float, on queue: BackendQueue) throws
    func gemm(
        _ shape: GemmShape, a: TensorStorage, b: TensorStorage, c: TensorStorage,
        bias: TensorStorage?, on queue: BackendQueue) throws
    func activate(
        _ activation: Activation, input: TensorStorage, output: TensorStorage, count: Int,
        on queue: BackendQueue) throws
    func activationGradient(
        _ activation: Activation, output: TensorStorage, gradient: TensorStorage,
        result: TensorStorage, count: Int, on queue: BackendQueue) throws
    func axpby(
        alpha: Float, x: TensorStorage, beta: Float, y: TensorStorage, count: Int,
        on queue: BackendQueue) throws
    func channelSums(
        _ x: TensorStorage, outer: Int, channels: Int, inner: Int, into: TensorStorage,
        alpha: Float, beta: Float, on queue: BackendQueue) throws
    func conv2d(
        _ shape: ConvShape, input: TensorStorage, weight: TensorStorage, bias: TensorStorage?,
        output: TensorStorage, activation: Activation, on queue: BackendQueue) throws
    func conv2dWeightGradient(
        _ shape: ConvShape, input: TensorStorage, outputGradient: TensorStorage,
        weightGradient: TensorStorage, biasGradient: TensorStorage?, beta: Float,
        on queue: BackendQueue) throws
    func pool2d(
        _ kind: PoolKind, shape: PoolShape, input: TensorStorage, output: TensorStorage,
        on queue: BackendQueue) throws
    func multiply(
        _ a: TensorStorage, _ b: TensorStorage, into: TensorStorage, count: Int,
        on queue: BackendQueue) throws
    func normalize(
        _ x: TensorStorage, layout: GroupLayout, xhat: TensorStorage, rstd: TensorStorage,
        epsilon: Float, on queue: BackendQueue) throws
    func normalizeGradient(
        _ dxhat: TensorStorage, xhat: TensorStorage, rstd: TensorStorage, into: TensorStorage,
        layout: GroupLayout, on queue: BackendQueue) throws
    func scaleShiftChannels(
        _ x: TensorStorage, scale: TensorStorage, shift: TensorStorage?, into: TensorStorage,
        count: Int, channels: Int, inner: Int, on queue: BackendQueue) throws
    func fillNormal(
        _ x: TensorStorage, count: Int, deviation: Float, seed: UInt64, on queue: BackendQueue)
        throws
    func deviationScale(
        _ x: TensorStorage, count: Int, target: Float, power: Float, sign: Float,
        into factor: TensorStorage, on queue: BackendQueue) throws
    func localLossRows(
        _ loss: LocalLossKind, batch: Int, columns: Int, y: TensorStorage, yy: TensorStorage,
        mask: TensorStorage, dY: TensorStorage, rowLosses: TensorStorage, on queue: BackendQueue)
        throws
    /// Forward-Forward's row pass (Kernels/forward_forward.cl): goodness, normalised rows,
    /// and on the first `lossRows` rows the loss and its gradient.
    func forwardForwardRows(
        _ p: ForwardForwardRowShape, a: TensorStorage, normalized: TensorStorage,
        sumSquares: TensorStorage, gradient: TensorStorage?, rowLosses: TensorStorage?,
        peer: TensorStorage?, on queue: BackendQueue) throws
    /// Forward-Forward's first layer on rows relabelled from computed ones
    /// (`Device.forwardForwardRelabel`).
    func forwardForwardRelabel(
        _ p: ForwardForwardRelabelShape, a: TensorStorage, inputs: TensorStorage,
        neutral: TensorStorage?, weight: TensorStorage, bias: TensorStorage,
        plan: TensorStorage, into: TensorStorage, on queue: BackendQueue) throws
    /// The transpose of `forwardForwardRelabel` for the first layer's weight gradient
    /// (`Device.forwardForwardRelabelGradient`).
    func forwardForwardRelabelGradient(
        _ p: ForwardForwardRelabelShape, gradient: TensorStorage, inputs: TensorStorage,
        plan: TensorStorage, into weightGradient: TensorStorage, on queue: BackendQueue) throws
    /// Forward-Forward's peer normalisation: the running mean moved, the gradient per unit.
    func forwardForwardPeer(
        a: TensorStorage, columns: Int, positives: Int, runningMean: TensorStorage,
        peer: TensorStorage, momentum: Float, weight: Float, on queue: BackendQueue) throws
    /// A leaky integrate-and-fire time loop over `plane` (sample, unit) entries
    /// (Kernels/spiking.cl); `constantCurrent`: one plane of current for every step; the
    /// membrane of every step is written where `membrane` is given.
    func lifForward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, current: TensorStorage,
        membrane: TensorStorage?, spikes: TensorStorage, representation: TensorStorage,
        rate: TensorStorage, stepRepresentation: TensorStorage?, neuron: NeuronStorage,
        steps: Range<Int>, state: TensorStorage?, on queue: BackendQueue) throws
    /// Its gradient: d loss / d current from d loss / d representation (`perStep`: a plane per
    /// step); `constantCurrent`: summed over steps into one plane. `membrane` is read for a
    /// surrogate's slope and a learned beta's gradient only; `neuronPartials`, where given,
    /// gets each entry's share of d loss / d (beta, threshold).
    func lifBackward(
        _ dynamics: LIFDynamics, plane: Int, constantCurrent: Bool, perStep: Bool,
        membrane: TensorStorage?, spikes: TensorStorage, gradient: TensorStorage,
        currentGradient: TensorStorage, neuron: NeuronStorage, neuronPartials: TensorStorage?,
        on queue: BackendQueue) throws
    /// `plane` pixels as `steps` planes of spikes (Kernels/spiking.cl's spike_encode).
    /// A surrogate's gradient at each of `count` planes of `membrane`: weight[t] times the
    /// surrogate's slope at U − threshold times `gradient` (one plane).
    func lifSurrogateGradient(
        _ dynamics: LIFDynamics, count: Int, plane: Int, membrane: TensorStorage,
        gradient: TensorStorage, weight: TensorStorage, into out: TensorStorage,
        neuron: NeuronStorage, on queue: BackendQueue) throws
    func spikeEncode(
        _ encoding: SpikeEncoding, steps: Int, chunk: Range<Int>, plane: Int, seed: UInt32,
        images: TensorStorage, trains: TensorStorage, on queue: BackendQueue) throws
    /// One optimizer step; `state` in `rule.stateNames` order.
    func step(
        _ rule: UpdateRule, parameter: TensorStorage, gradient: TensorStorage,
        state: [TensorStorage], count: Int, on queue: BackendQueue) throws
    /// `weight` [m, n] stepped by `rule` with gradient Σ pairs' outputGradientᵀ · input, the
    /// step in the product's epilogue (at most two pairs: a block's two streams).
    func updateWeights(
        m: Int, n: Int, pairs: [WeightGradientPair], weight: TensorStorage, rule: UpdateRule,
        state: [TensorStorage], on queue: BackendQueue) throws
}

/// Backend-owned memory behind a `Tensor`.
protocol TensorStorage: AnyObject, Sendable {}

/// A spiking layer's beta and threshold, one value each on the device.
struct NeuronStorage {
    let beta: TensorStorage
    let threshold: TensorStorage
}

/// An ordered stream of work on a device.
protocol BackendQueue: AnyObject, Sendable {
    /// Where the queue logs each operation it runs (nil: no logging, the usual case).
    var kernelLog: KernelLog? { get set }
    func record() throws -> BackendEvent
    func wait(for event: BackendEvent) throws
    func synchronize() throws
}

protocol BackendEvent: AnyObject, Sendable {
    func wait() throws
    /// Whether the event has completed (or failed), without waiting.
    var isComplete: Bool { get }
    /// When the event completed, in nanoseconds of a clock shared by the device's queues
    /// (device timestamps on OpenCL, the host's monotonic clock on the CPU). After `wait()`.
    func completionNanoseconds() throws -> UInt64
}
