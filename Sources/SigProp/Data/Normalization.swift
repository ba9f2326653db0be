import Foundation

/// Per-channel standardisation, x ↦ (x − mean) / std, on pixels already scaled to 0...1.
/// Codable so a checkpoint can carry the values it was trained with.
public struct Normalization: Sendable, Codable, Equatable {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    // The values torchvision examples and the SigProp paper's code use.
    public static let fashionMNIST = Normalization(mean: [0.2860], std: [0.3530])
    public static let mnist = Normalization(mean: [0.1307], std: [0.3081])
    public static let cifar10 = Normalization(
        mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])

    /// The published values of the sets above, by name.
    public static let published: [(name: String, values: Normalization)] = [
        ("Fashion-MNIST", .fashionMNIST), ("MNIST", .mnist), ("CIFAR-10", .cifar10),
    ]

    /// The normalisation for `dataset`, which should be the whole training split (statistics
    /// from the test split would leak it into training), and where it comes from, to show
    /// the user. Its statistics are computed; when they match a published set's values (to
    /// 5e-4, as the full Fashion-MNIST, MNIST and CIFAR-10 training sets do), those values are
    /// used exactly. The files' contents decide, not the folder's name.
    public static func standard(for dataset: Dataset) -> (values: Normalization, source: String) {
        let computed = compute(from: dataset)
        func matches(_ known: Normalization) -> Bool {
            known.mean.count == computed.mean.count
                && zip(known.mean + known.std, computed.mean + computed.std).allSatisfy {
                    abs($0 - $1) <= 5e-4
                }
        }
        if let (name, values) = published.first(where: { matches($0.values) }) {
            return (values, "the published \(name) values, which these training images match")
        }
        return (computed, "computed from the \(dataset.count) training images")
    }

    /// "mean 0.2860, std 0.3530" (a value per channel, space-separated).
    public var summary: String {
        func list(_ values: [Float]) -> String {
            values.map { String(format: "%.4f", $0) }.joined(separator: " ")
        }
        return "mean \(list(mean)), std \(list(std))"
    }

    /// Mean and population standard deviation of each channel over every pixel of every image,
    /// accumulated in Double. A constant channel gets std 1 so `apply` never divides by 0.
    public static func compute(from dataset: Dataset) -> Normalization {
        let channels = dataset.channels
        let plane = dataset.height * dataset.width
        let count = dataset.count
        guard count > 0 else {
            return Normalization(
                mean: Array(repeating: 0, count: channels),
                std: Array(repeating: 1, count: channels))
        }
        var sums = [Double](repeating: 0, count: channels)
        var squares = [Double](repeating: 0, count: channels)
        dataset.images.withUnsafeBufferPointer { pixels in
            // Two passes (mean, then squared deviations) rather than sum of squares, which
            // cancels badly when the deviation is small next to the mean.
            for image in 0..<count {
                for c in 0..<channels {
                    let start = (image * channels + c) * plane
                    // One plane is at most a few thousand values: Float is exact enough.
                    var sum: Float = 0
                    for i in start..<(start + plane) { sum += pixels[i] }
                    sums[c] += Double(sum)
                }
            }
            let n = Double(count * plane)
            let means = sums.map { Float($0 / n) }
            for image in 0..<count {
                for c in 0..<channels {
                    let start = (image * channels + c) * plane
                    let m = means[c]
                    var sum: Float = 0
                    for i in start..<(start + plane) {
                        let d = pixels[i] - m
                        sum += d * d
                    }
                    squares[c] += Double(sum)
                }
            }
        }
        let n = Double(count * plane)
        let mean = sums.map { Float($0 / n) }
        let std = squares.map { variance -> Float in
            let s = Float((variance / n).squareRoot())
            return s > 0 ? s : 1
        }
        return Normalization(mean: mean, std: std)
    }

    /// `dataset` with every pixel standardised. One mean/std pair applies to all channels;
    /// otherwise there must be one per channel (a checkpoint's values used on another set
    /// fail here rather than train on garbage).
    public func apply(to dataset: Dataset) throws -> Dataset {
        let channels = dataset.channels
        guard mean.count == std.count, mean.count == channels || mean.count == 1 else {
            throw SigPropError.shapeMismatch(
                operation: "Normalization.apply",
                detail:
                    "\(mean.count) means and \(std.count) standard deviations for images of "
                    + "\(channels) channels"
            )
        }
        if let bad = std.first(where: { !($0 > 0) || !$0.isFinite }) {
            throw SigPropError.configuration(
                "Normalization.apply: standard deviation \(bad) is not a positive number")
        }
        let plane = dataset.height * dataset.width
        let count = dataset.count
        let means = mean.count == 1 ? Array(repeating: mean[0], count: channels) : mean
        let scales = (mean.count == 1 ? Array(repeating: std[0], count: channels) : std).map {
            1 / $0
        }
        var images = dataset.images
        images.withUnsafeMutableBufferPointer { pixels in
            for image in 0..<count {
                for c in 0..<channels {
                    let start = (image * channels + c) * plane
                    let m = means[c]
                    let s = scales[c]
                    for i in start..<(start + plane) { pixels[i] = (pixels[i] - m) * s }
                }
            }
        }
        return Dataset(unchecked: images, labels: dataset.labels, like: dataset)
    }
}
