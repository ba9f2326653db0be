import Foundation

/// The lines `train` prints while it runs, fitted to the terminal's width: an in-place line
/// wider than the terminal wraps, and every update then leaves a stale line behind. Lists that
/// grow with the model (losses, readouts) are elided or wrapped, so a 50-block model stays
/// readable.
package enum ProgressText {
    /// "7,316": groups of three digits, as in English.
    public static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var groups: [Substring] = []
        var end = digits.endIndex
        while end > digits.startIndex {
            let start =
                digits.index(end, offsetBy: -3, limitedBy: digits.startIndex)
                ?? digits.startIndex
            groups.insert(digits[start..<end], at: 0)
            end = start
        }
        return (value < 0 ? "-" : "") + groups.joined(separator: ",")
    }

    /// "epoch 1/5  batch 12/468  7,316 samples/s  ETA 41s  loss 0.123 0.456 … 1.234" ("batch
    /// 12/468  2 ranks  7,316 samples/s" over several MPI ranks), in
    /// fewer than `width` characters (writing the last column makes some terminals wrap):
    /// the losses to three decimals when they all fit, else to two, else the first ones to
    /// three, "…" and the output layer's. A spiking network's blocks' spikes per step come
    /// before the losses ("spikes 7.4% 5.1%") where they leave the losses room.
    public static func progress(_ progress: BatchProgress, epochs: Int, width: Int) -> String {
        let head =
            "epoch \(progress.epoch + 1)/\(epochs)  batch \(grouped(progress.batch))/"
            + "\(grouped(progress.batches))  "
            + (progress.ranks > 1 ? "\(progress.ranks) ranks  " : "")
            + "\(grouped(Int(progress.samplesPerSecond.rounded())))"
            + " samples/s  ETA \(duration(progress.secondsLeft))"
        let width = max(20, width - 1)
        func withLosses(_ head: String) -> String {
            let losses = progress.blockLosses.map { String(format: "%.3f", $0) }
            let line = fit(head: head, label: "loss", items: losses, width: width)
            guard line.contains("…") else { return line }
            // Every loss to two decimals beats some of them to three.
            let shorter = progress.blockLosses.map { String(format: "%.2f", $0) }
            let all = fit(head: head, label: "loss", items: shorter, width: width)
            return all.contains("…") ? line : all
        }
        let plain = withLosses(head)
        guard !progress.spikeRates.isEmpty else { return plain }
        let spiking = withLosses(
            head + "  spikes "
                + progress.spikeRates.map { String(format: "%.1f%%", 100 * $0) }.joined(
                    separator: " "))
        // The spikes only where every loss the line would show without them still shows.
        let fits = spiking.contains("loss") && (!spiking.contains("…") || plain.contains("…"))
        return fits ? spiking : plain
    }

    /// "41s", "3m25s", "2h05m": short, as the progress line has little room.
    public static func duration(_ seconds: Double) -> String {
        let whole = seconds.isFinite ? max(0, Int(seconds.rounded())) : 0
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(String(format: "%02d", whole % 60))s" }
        return "\(grouped(whole / 3600))h\(String(format: "%02d", whole % 3600 / 60))m"
    }

    /// `head`, then `label` and `items` when they fit in `width` characters; else the first
    /// items that fit, "…" and the last item (the output layer's, for losses).
    static func fit(head: String, label: String, items: [String], width: Int) -> String {
        func line(_ shown: [String]) -> String {
            ([head + "  " + label] + shown).joined(separator: " ")
        }
        if line(items).count <= width { return line(items) }
        if let last = items.last {
            for kept in stride(from: items.count - 2, through: 0, by: -1) {
                let candidate = line(Array(items.prefix(kept)) + ["…", last])
                if candidate.count <= width { return candidate }
            }
        }
        return String(head.prefix(width))
    }

    /// `label` and `items` in lines of fewer than `width` characters, items separated by
    /// `separator`; continuation lines are indented under the first item.
    public static func wrapped(
        _ label: String, _ items: [String], separator: String = " ", width: Int
    ) -> [String] {
        let limit = max(20, width - 1)
        let indent = String(repeating: " ", count: min(label.count + 1, limit / 2))
        var lines: [String] = []
        let trailer = separator.trimmingCharacters(in: .whitespaces)
        var current = label
        var empty = true
        for (index, item) in items.enumerated() {
            let candidate = current + (empty ? " " : separator) + item
            let room = index == items.count - 1 ? limit : limit - trailer.count
            if candidate.count <= room || empty {
                current = candidate
            } else {
                lines.append(current + trailer)
                current = indent + item
            }
            empty = false
        }
        return lines + [current]
    }

    /// Natural order of names: "similarity@2" before "similarity@10".
    public static func naturalOrder(_ a: String, _ b: String) -> Bool {
        a.compare(b, options: .numeric) == .orderedAscending
    }
}
