import Foundation
import Testing

@testable import SigProp

/// The lines `train` prints while it runs fit the terminal, whatever the model's size.
@Suite struct ProgressTextTests {
    static func progress(blocks: Int) -> BatchProgress {
        BatchProgress(
            epoch: 0, batch: 123, batches: 468, samplesPerSecond: 7316.4,
            blockLosses: (0...blocks).map { 0.5 + Double($0) / 1000 }, secondsLeft: 41.2)
    }

    /// Over several MPI ranks the line says how many train together; one process says nothing.
    @Test func progressLineNamesTheRanks() {
        var progress = Self.progress(blocks: 3)
        #expect(!ProgressText.progress(progress, epochs: 5, width: 120).contains("ranks"))
        progress.ranks = 3
        let line = ProgressText.progress(progress, epochs: 5, width: 120)
        #expect(line.hasPrefix("epoch 1/5  batch 123/468  3 ranks  7,316 samples/s"), "\(line)")
    }

    @Test func numbersAreGroupedInThousands() {
        #expect(ProgressText.grouped(7316) == "7,316")
        #expect(ProgressText.grouped(1_234_567) == "1,234,567")
        #expect(ProgressText.grouped(999) == "999")
        #expect(ProgressText.grouped(0) == "0")
        #expect(ProgressText.grouped(-45_000) == "-45,000")
    }

    /// The default model (3 blocks + output) shows every loss on an 80-column terminal; a
    /// 50-block one shows the first losses, "…" and the output layer's, in the same width;
    /// a narrow terminal gets the start of the line.
    @Test(arguments: [(3, 80), (50, 80), (50, 40), (3, 200), (50, 1)])
    func progressLineFitsTheTerminal(blocks: Int, width: Int) {
        let line = ProgressText.progress(Self.progress(blocks: blocks), epochs: 5, width: width)
        let head = "epoch 1/5  batch 123/468  7,316 samples/s  ETA 41s"
        #expect(line.count < max(width, 21), "\(line.count) characters: \(line)")
        #expect(line.hasPrefix(head) || head.hasPrefix(line), "\(line)")
        switch (blocks, width) {
        case (3, 80):
            #expect(line.hasSuffix("  loss 0.50 0.50 0.50 0.50"), "\(line)")
        case (3, 200):
            #expect(line.hasSuffix("  loss 0.500 0.501 0.502 0.503"), "\(line)")
        case (50, 80):
            #expect(line.contains("  loss 0.500 0.501 ") && line.hasSuffix(" … 0.550"), "\(line)")
        default:
            break
        }
    }

    /// A spiking network's line shows each block's spikes per step before the losses where
    /// they leave the losses room, and leaves them out where they do not.
    @Test func spikeRatesComeBeforeTheLosses() {
        var progress = Self.progress(blocks: 2)
        progress.spikeRates = [0.0743, 0.051]
        let line = ProgressText.progress(progress, epochs: 5, width: 120)
        #expect(line.contains("ETA 41s  spikes 7.4% 5.1%  loss 0.500"), "\(line)")
        let narrow = ProgressText.progress(progress, epochs: 5, width: 70)
        #expect(!narrow.contains("spikes") && narrow.count < 70, "\(narrow)")
    }

    @Test func durationsAreShort() {
        #expect(ProgressText.duration(41.2) == "41s")
        #expect(ProgressText.duration(205) == "3m25s")
        #expect(ProgressText.duration(7500) == "2h05m")
        #expect(ProgressText.duration(.infinity) == "0s")
    }

    @Test func listsWrapWithinTheWidthInNaturalOrder() {
        let names = (1...50).map { "similarity@\($0)" }.shuffled()
        let sorted = names.sorted(by: ProgressText.naturalOrder)
        #expect(sorted.prefix(3) == ["similarity@1", "similarity@2", "similarity@3"])
        #expect(sorted.last == "similarity@50")
        let lines = ProgressText.wrapped(
            "  other readouts:", sorted.map { "\($0) 12.34%" }, separator: ", ", width: 80)
        #expect(lines.count > 1)
        #expect(lines.allSatisfy { $0.count < 80 }, "\(lines)")
        #expect(lines.joined().contains("similarity@9 12.34%, "))
    }

    @Test func terminalWidthFallsBackToCOLUMNSThen80() {
        // Not a terminal: descriptor -1.
        #expect(Terminal.columns(of: -1, environment: ["COLUMNS": "132"]) == 132)
        #expect(Terminal.columns(of: -1, environment: ["COLUMNS": "wide"]) == 80)
        #expect(Terminal.columns(of: -1, environment: [:]) == 80)
    }
}
