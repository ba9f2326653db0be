// The `opencl` and `cpu` implementations: SigProp's public Device API, as layers call it.

import Foundation
import SigProp

/// The OpenCL device SigProp would use with SIGPROP_BACKEND=opencl: SIGPROP_DEVICE (an index
/// or part of a name, as `swift run doctor` lists them), else the first device.
func openCLEntry() throws -> OpenCLDeviceEntry {
    let entries = try OpenCLDiscovery.allDevices()
    guard !entries.isEmpty else {
        throw BenchmarkSetupError(
            "no OpenCL device found (apt-get install pocl-opencl-icd runs OpenCL on the CPU); skip these with --skip '.*/(opencl|clblast)/.*'"
        )
    }
    guard let selector = ProcessInfo.processInfo.environment[BackendSelection.deviceVariable],
        !selector.isEmpty
    else {
        return entries[0]
    }
    if let index = Int(selector) {
        guard entries.indices.contains(index) else {
            throw BenchmarkSetupError(
                "\(BackendSelection.deviceVariable)=\(selector) is not a device index (0..<\(entries.count))"
            )
        }
        return entries[index]
    }
    let matches = entries.filter { $0.info.name.lowercased().contains(selector.lowercased()) }
    guard matches.count == 1 else {
        throw BenchmarkSetupError(
            "\(BackendSelection.deviceVariable)=\(selector) matches \(matches.count) OpenCL devices; give an index or a longer name"
        )
    }
    return matches[0]
}

func openCLDevice() throws -> Device { try Device.opencl(try openCLEntry()) }

func sigpropGemm(_ device: Device, _ shape: GemmCase) throws -> () throws -> Void {
    let a = try randomTensor(device, shape.aShape, seed: 1)
    let b = try randomTensor(device, shape.bShape, seed: 2)
    let c = try device.zeros([shape.m, shape.n])
    try device.defaultStream.synchronize()
    return {
        try device.gemm(a, transposeA: shape.transposeA, b, transposeB: shape.transposeB, into: c)
        try device.defaultStream.synchronize()
    }
}

func sigpropConv(_ device: Device, _ shape: ConvCase) throws -> () throws -> Void {
    let input = try randomTensor(device, shape.inputShape, seed: 1)
    let weight = try randomTensor(device, shape.weightShape, seed: 2)
    let output = try device.zeros(shape.outputShape)
    try device.defaultStream.synchronize()
    return {
        try device.conv2d(input, weight: weight, into: output, padding: shape.padding)
        try device.defaultStream.synchronize()
    }
}

func sigpropConvWeightGradient(_ device: Device, _ shape: ConvCase) throws -> () throws -> Void {
    let input = try randomTensor(device, shape.inputShape, seed: 1)
    let outputGradient = try randomTensor(device, shape.outputShape, seed: 3)
    let weightGradient = try device.zeros(shape.weightShape)
    try device.defaultStream.synchronize()
    return {
        try device.conv2dWeightGradient(
            input, outputGradient: outputGradient, into: weightGradient, padding: shape.padding)
        try device.defaultStream.synchronize()
    }
}

/// A block's local step, as training runs it: `LocalLoss.evaluate` (which allocates its
/// outputs, as training does), then the weight's Adam step. `fused`: in the epilogue of the
/// weight-gradient product over both streams (`Device.updateWeights`); unfused: the two
/// weight-gradient products into a gradient tensor, then the Adam kernel.
func sigpropLocalStep(_ device: Device, _ shape: LocalStepCase, fused: Bool) throws -> () throws ->
    Void
{
    let (b, n, i) = (shape.batch, shape.outputs, shape.inputs)
    let h = try randomTensor(device, [b, n], seed: 1)
    let t = try randomTensor(device, [b, n], seed: 2)
    let t0 = try randomTensor(device, [b, n], seed: 3)
    let x = try randomTensor(device, [b, i], seed: 4)
    let x0 = try randomTensor(device, [b, i], seed: 5)
    let weight = try randomTensor(device, [n, i], seed: 6)
    let gradient = try device.zeros([n, i])
    let m = try device.zeros([n, i])
    let v = try device.zeros([n, i])
    try device.defaultStream.synchronize()
    let loss = LocalLoss()
    var step = 0
    return {
        step += 1
        let out = try loss.evaluate(h: h, t: t, t0: t0)
        let adam = UpdateRule(.adam, learningRate: 5e-4, step: step)
        if fused {
            try device.updateWeights(
                weight, gradientPairs: [(out.dH, x), (out.dT, x0)], rule: adam, state: [m, v])
        } else {
            try device.gemm(out.dH, transposeA: true, x, into: gradient)
            try device.gemm(out.dT, transposeA: true, x0, into: gradient, beta: 1)
            try device.step(weight, gradient: gradient, rule: adam, state: [m, v])
        }
        try device.defaultStream.synchronize()
    }
}
