import Foundation
import SigProp

// Synthetic data: class c of 4 is an image of noise with its quadrant c slightly brighter.
func quadrants(_ count: Int, seed: UInt64) throws -> Dataset {
    var generator = SeededGenerator(seed: seed)
    let y = (0..<count).map { _ in Int32.random(in: 0..<4, using: &generator) }
    let bright: [Bool] = y.flatMap { c in (0..<144).map { $0 / 72 * 2 + $0 % 12 / 6 == Int(c) } }
    let x = bright.map { Float($0 ? 0.6 : 0.4) + .random(in: -0.5...0.5, using: &generator) }
    return try Dataset(images: x, labels: y, channels: 1, height: 12, width: 12, classes: 4)
}

do {
    let description = NetworkDescription(
        layers: [.conv(16), .pool(.max), .conv(32, kernel: 5, stride: 2, padding: 2), .dense(128)],
        convNorm: .batch)
    let parsed = try NetworkDescription(layerList: "conv16,pool,conv32k5s2p2,dense128")
    print("parsed \(parsed.layerList): same layers \(parsed.layers == description.layers)")
    let environment = ProcessInfo.processInfo.environment  // SIGPROP_BACKEND=auto, opencl or cpu
    let (devices, warnings) = try BackendSelection(environment: environment).makeDevices()
    for warning in warnings { print("warning: \(warning)") }
    var options = TrainingOptions()
    (options.loss, options.batchSize, options.epochs) = (.topK(2), 32, 2)
    options.optimizer.learningRate = 2e-3
    let (train, test) = (try quadrants(384, seed: 1), try quadrants(256, seed: 2))
    let network = try Network(
        description, inputShape: [1, 12, 12], classes: 4, devices: devices,
        optimizer: options.optimizer, seed: options.seed)
    let trainer = try Trainer(
        network: network, options: options, train: train, test: test, schedule: Schedule(depth: 4))
    for epoch in 0..<options.epochs {
        let outcome = try trainer.runEpoch(epoch, progress: { print("  batch \($0.batch)") })
        guard case .completed(let m) = outcome else { break }
        print("epoch \(m.epoch): losses \(m.blockLosses.map(Float.init)), test \(m.testAccuracy)")
    }
    let file = URL.temporaryDirectory.appending(path: "sigprop-example.safetensors")
    try Checkpoint(network: network, options: options, epochs: options.epochs).write(to: file)
    let checkpoint = try Checkpoint(contentsOf: file)
    let (model, shape, classes) = try checkpoint.model
    let restored = try Network(
        model, inputShape: shape, classes: classes, devices: devices,
        optimizer: try checkpoint.options.optimizer, seed: 0)
    try checkpoint.restore(into: restored)
    let again = try Trainer(network: restored, options: options, train: train, test: test)
    print("restored on \(restored.device): test \(try again.evaluate(test)["output"] ?? 0)")
} catch {
    print("error: \(error)")
    exit(1)
}
