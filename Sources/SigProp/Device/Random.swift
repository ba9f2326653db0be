import Foundation

/// A small seeded generator (SplitMix64): the same seed gives the same numbers everywhere.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform floats in `range`.
    public mutating func uniform(_ count: Int, in range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &self) }
    }
}

extension SeededGenerator {
    /// Normal draws with mean 0 and standard deviation `deviation` (Box-Muller, both values
    /// of each pair used).
    public mutating func normal(_ count: Int, deviation: Float) -> [Float] {
        var values: [Float] = []
        values.reserveCapacity(count + 1)
        while values.count < count {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
            let u2 = Double.random(in: 0..<1, using: &self)
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            values.append(Float(radius * Foundation.cos(2 * Double.pi * u2)) * deviation)
            values.append(Float(radius * Foundation.sin(2 * Double.pi * u2)) * deviation)
        }
        return Array(values.prefix(count))
    }
}
