/// Training-time augmentation of a batch, in place: the usual CIFAR recipe (random crop from a
/// zero-padded image, random horizontal flip). Not for evaluation.
public struct Augmentation: Sendable, Equatable {
    /// Pixels of zero padding on each side before cropping back to the original size;
    /// 0 turns cropping off. Zero is the padding value whatever the pixels mean: on
    /// normalised images that pads with the mean colour rather than black.
    public var randomCropPadding: Int
    /// Mirror each image left–right with probability 1/2.
    public var horizontalFlip: Bool

    public init(randomCropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.randomCropPadding = randomCropPadding
        self.horizontalFlip = horizontalFlip
    }

    public static let none = Augmentation()
    public var isEnabled: Bool { randomCropPadding > 0 || horizontalFlip }

    /// Augments each C×H×W image of `images` (`n × C·H·W` floats). The draws per image are,
    /// in order, the crop's row and column offset (when cropping) and the flip (when
    /// flipping), so a given generator state always gives the same result.
    ///
    /// `images` must hold whole images of that shape (as `Dataset.batch` returns them); a
    /// negative padding counts as 0 (the command line checks its flags before this point).
    public func apply(
        images: inout [Float], channels: Int, height: Int, width: Int,
        using generator: inout SeededGenerator
    ) {
        let features = channels * height * width
        precondition(
            features > 0 && images.count % features == 0,
            "Augmentation.apply: \(images.count) floats are not whole images of "
                + "\(channels)×\(height)×\(width)"
        )
        guard isEnabled else { return }
        let padding = max(0, randomCropPadding)
        var scratch = [Float](repeating: 0, count: features)
        images.withUnsafeMutableBufferPointer { all in
            for start in stride(from: 0, to: all.count, by: features) {
                let image = UnsafeMutableBufferPointer(rebasing: all[start..<(start + features)])
                if padding > 0 {
                    // Offsets into the padded image, 0...2p; shifting by offset − p.
                    let dy =
                        Int(BatchOrder.draw(below: UInt64(2 * padding + 1), using: &generator))
                        - padding
                    let dx =
                        Int(BatchOrder.draw(below: UInt64(2 * padding + 1), using: &generator))
                        - padding
                    Self.shift(
                        image, by: (dy, dx), channels: channels, height: height, width: width,
                        scratch: &scratch)
                }
                if horizontalFlip, generator.next() >> 63 == 1 {
                    Self.flipHorizontally(image, channels: channels, height: height, width: width)
                }
            }
        }
    }

    /// out[c, y, x] = in[c, y + dy, x + dx], zero where that falls outside the image.
    static func shift(
        _ image: UnsafeMutableBufferPointer<Float>, by offset: (dy: Int, dx: Int),
        channels: Int, height: Int, width: Int, scratch: inout [Float]
    ) {
        if offset == (0, 0) { return }
        scratch.withUnsafeMutableBufferPointer { out in
            for c in 0..<channels {
                for y in 0..<height {
                    let row = (c * height + y) * width
                    let sourceY = y + offset.dy
                    for x in 0..<width {
                        let sourceX = x + offset.dx
                        let inside =
                            sourceY >= 0 && sourceY < height && sourceX >= 0 && sourceX < width
                        out[row + x] = inside ? image[(c * height + sourceY) * width + sourceX] : 0
                    }
                }
            }
            for i in 0..<image.count { image[i] = out[i] }
        }
    }

    /// Mirrors every row left–right; applying it twice gives the image back.
    static func flipHorizontally(
        _ image: UnsafeMutableBufferPointer<Float>, channels: Int, height: Int, width: Int
    ) {
        for row in 0..<(channels * height) {
            var left = row * width
            var right = left + width - 1
            while left < right {
                image.swapAt(left, right)
                left += 1
                right -= 1
            }
        }
    }
}
