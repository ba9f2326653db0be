import Foundation
import Testing
@testable import SigProp

/// The device protocol's own guarantees, on every backend: streams, events, checks.
@Suite struct DeviceTests {
    @Test(arguments: TestBackend.available)
    func eventsOrderWorkAcrossStreams(_ backend: TestBackend) throws {
        let device = try backend.device()
        let producer = try device.makeStream(), consumer = try device.makeStream()
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
        let mine = try device.zeros([2, 2]), theirs = try other.zeros([2, 2])
        #expect {
            try device.gemm(mine, theirs, into: mine)
        } throws: { error in
            guard case .deviceMismatch(let operation, _, _)? = error as? SigPropError else { return false }
            return operation == "gemm" && "\(error)".contains("Device.transfer")
        }
        #expect(throws: SigPropError.self) { try device.fill(mine, with: 1, on: try other.makeStream()) }
    }

    @Test(arguments: TestBackend.available)
    func shapeMismatchesNameBothShapes(_ backend: TestBackend) throws {
        let device = try backend.device()
        #expect {
            try device.gemm(try device.zeros([2, 3]), try device.zeros([4, 5]), into: try device.zeros([2, 5]))
        } throws: { "\($0)".contains("[2, 3]") && "\($0)".contains("[4, 5]") }
        #expect(throws: SigPropError.self) { _ = try device.tensor([1, 2, 3], shape: [2, 2]) }
        #expect(throws: SigPropError.self) {
            try device.conv2d(try device.zeros([1, 2, 2, 2]), weight: try device.zeros([1, 2, 5, 5]), into: try device.zeros([1, 1, 1, 1]))
        }
        #expect(throws: SigPropError.self) {
            try device.localLossRows(.topK(0), y: try device.zeros([2, 2]), yy: try device.zeros([2, 2]), mask: try device.zeros([2, 2]),
                                     dY: try device.zeros([2, 2]), rowLosses: try device.zeros([2]))
        }
    }

    /// A device and its tensors and streams are freed when the last reference goes (an
    /// OpenCL context per leaked device would add up in a long-running process).
    @Test(arguments: TestBackend.available)
    func devicesAreReleased(_ backend: TestBackend) throws {
        weak var released: Device?
        try {
            let device = backend == .cpu ? try Device.cpu() : try Device.opencl(TestBackend.openCLEntries[0])
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
