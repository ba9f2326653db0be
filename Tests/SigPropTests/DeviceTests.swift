import Foundation
import Synchronization
import Testing

@testable import SigProp

/// The device protocol's own guarantees, on every backend: streams, events, checks.
@Suite struct DeviceTests {
    /// Storage the caller lets go of after reading it back is gone from `bytesInUse` as soon
    /// as the read returns: the CPU queue's thread must not still hold it through the closures
    /// it ran (the per-epoch device bytes of the metrics, and the leak checks, read it then).
    /// A device of its own: tests running in parallel on the shared one move its count.
    @Test func storageLetGoAfterAReadIsNotCounted() throws {
        let device = try Device.cpu()
        let stream = try device.makeStream()
        let before = device.bytesInUse
        var counted: [Int] = []
        for round in 0..<10000 {
            do {
                let tensor = try device.tensor(
                    random(64, seed: UInt64(round)), shape: [64], on: stream)
                _ = try device.read(tensor, on: stream)
            }
            if device.bytesInUse != before { counted.append(device.bytesInUse - before) }
        }
        #expect(
            counted.isEmpty,
            "\(counted.count) of 10,000 reads left bytes counted: \(counted.prefix(5))")
    }

    /// Threads that share one stream (parallel tests on the default stream do) may interleave
    /// their launches: an operation's multi-launch sequence through the queue's scratch buffers
    /// (im2col columns, dZ gathered for the weight gradient; on GPUs split-K partials too) must
    /// still see only its own data. Convolutions of two sizes and their weight gradients from
    /// four threads at once, against one thread's results.
    @Test(arguments: TestBackend.available)
    func threadsSharingAStreamKeepTheirScratch(_ backend: TestBackend) throws {
        let device = try backend.device()
        let shapes = [
            ConvShape(
                batch: 3, inChannels: 4, height: 9, width: 7, outChannels: 5, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
            ConvShape(
                batch: 2, inChannels: 2, height: 5, width: 6, outChannels: 3, kernelHeight: 3,
                kernelWidth: 3, stride: 1, padding: 1),
        ]
        struct Case: Sendable {
            let input: Tensor, weight: Tensor, output: Tensor, gradient: Tensor,
                weightGradient: Tensor
        }
        func makeCase(_ s: ConvShape, seed: UInt64) throws -> Case {
            Case(
                input: try device.tensor(
                    random(s.batch * s.inChannels * s.height * s.width, seed: seed),
                    shape: [s.batch, s.inChannels, s.height, s.width]),
                weight: try device.tensor(
                    random(s.outChannels * s.inChannels * 9, seed: seed + 1),
                    shape: [s.outChannels, s.inChannels, 3, 3]),
                output: try device.zeros([s.batch, s.outChannels, s.outHeight, s.outWidth]),
                gradient: try device.tensor(
                    random(s.batch * s.outChannels * s.outHeight * s.outWidth, seed: seed + 2),
                    shape: [s.batch, s.outChannels, s.outHeight, s.outWidth]),
                weightGradient: try device.zeros([s.outChannels, s.inChannels, 3, 3]))
        }
        let run: @Sendable (Case) throws -> [[Float]] = { c in
            try device.conv2d(c.input, weight: c.weight, into: c.output, padding: 1)
            try device.conv2dWeightGradient(
                c.input, outputGradient: c.gradient, into: c.weightGradient, padding: 1)
            return [try device.read(c.output), try device.read(c.weightGradient)]
        }
        let cases = try (0..<4).map { try makeCase(shapes[$0 % 2], seed: UInt64(10 * $0)) }
        let expected = try cases.map(run)
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            for _ in 0..<25 {
                if (try? run(cases[index])) != expected[index] { failures.withLock { $0 += 1 } }
            }
        }
        #expect(failures.withLock { $0 } == 0, "runs that saw another thread's scratch data")
    }

    @Test(arguments: TestBackend.available)
    func eventsOrderWorkAcrossStreams(_ backend: TestBackend) throws {
        let device = try backend.device()
        let producer = try device.makeStream()
        let consumer = try device.makeStream()
        let count = 1 << 16
        let a = try device.zeros([count], on: producer)
        let b = try device.zeros([count], on: consumer)
        try consumer.synchronize()
        // A long chain on the producer; the consumer's copy must see its end result.
        for value in 1...20 { try device.fill(a, with: Float(value), on: producer) }
        let done = try producer.record()
        try consumer.wait(for: done)
        try device.copy(a, to: b, on: consumer)
        #expect(try device.read(b, on: consumer) == [Float](repeating: 20, count: count))
        try done.wait()
        try producer.synchronize()
    }

    @Test(arguments: TestBackend.available)
    func tensorsRecordShapeAndDevice(_ backend: TestBackend) throws {
        let device = try backend.device()
        let t = try device.zeros([4, 3, 2, 2])
        #expect(t.count == 48 && t.rows == 4 && t.columns == 12)
        #expect(t.device === device)
        #expect(try device.read(t) == [Float](repeating: 0, count: 48))
        let empty = try device.zeros([0, 5])
        #expect(try device.read(empty).isEmpty)
    }

    @Test(arguments: TestBackend.available)
    func mixingDevicesIsAnErrorNotACrash(_ backend: TestBackend) throws {
        let device = try backend.device()
        let other = try Device.cpu()
        let mine = try device.zeros([2, 2])
        let theirs = try other.zeros([2, 2])
        #expect {
            try device.gemm(mine, theirs, into: mine)
        } throws: { error in
            guard case .deviceMismatch(let operation, _, _)? = error as? SigPropError else {
                return false
            }
            return operation == "gemm" && "\(error)".contains("Device.transfer")
        }
        #expect(throws: SigPropError.self) {
            try device.fill(mine, with: 1, on: try other.makeStream())
        }
    }

    @Test(arguments: TestBackend.available)
    func shapeMismatchesNameBothShapes(_ backend: TestBackend) throws {
        let device = try backend.device()
        #expect {
            try device.gemm(
                try device.zeros([2, 3]), try device.zeros([4, 5]), into: try device.zeros([2, 5]))
        } throws: { "\($0)".contains("[2, 3]") && "\($0)".contains("[4, 5]") }
        #expect(throws: SigPropError.self) { _ = try device.tensor([1, 2, 3], shape: [2, 2]) }
        #expect(throws: SigPropError.self) {
            try device.conv2d(
                try device.zeros([1, 2, 2, 2]), weight: try device.zeros([1, 2, 5, 5]),
                into: try device.zeros([1, 1, 1, 1]))
        }
        #expect(throws: SigPropError.self) {
            try device.localLossRows(
                .topK(0), y: try device.zeros([2, 2]), yy: try device.zeros([2, 2]),
                mask: try device.zeros([2, 2]),
                dY: try device.zeros([2, 2]), rowLosses: try device.zeros([2]))
        }
    }

    /// A device and its tensors and streams are freed when the last reference goes (an
    /// OpenCL context per leaked device would add up in a long-running process).
    @Test(arguments: TestBackend.available)
    func devicesAreReleased(_ backend: TestBackend) throws {
        weak var released: Device?
        try {
            let device =
                backend == .cpu ? try Device.cpu() : try Device.opencl(TestBackend.openCLEntries[0])
            let stream = try device.makeStream()
            let tensor = try device.zeros([4], on: stream)
            try device.fill(tensor, with: 1, on: device.defaultStream)
            try stream.synchronize()
            released = device
        }()
        #expect(released == nil)
    }

    @Test func capabilitiesAreData() throws {
        for backend in TestBackend.available {
            let capabilities = try backend.device().capabilities
            #expect(capabilities.asynchronous)
            #expect(capabilities.profiling == (backend == .opencl))
        }
    }
}
