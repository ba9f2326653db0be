import Dispatch
import Foundation

extension Pipeline {
    /// Every rank's trace as one Chrome trace on rank 0, a process per rank (`rank 0`, …).
    /// Where every rank times its stages with the host's clock (the CPU fallback), the ranks
    /// meet through their wall clocks (as close as the machines' clocks are); otherwise each
    /// rank's first span starts at 0. Collective: every rank calls it; rank 0 gets the JSON,
    /// the others nil. Without ranks: this process's trace; without a trace: nil.
    public func traceOverRanks() throws -> Data? {
        guard let trace else { return nil }
        guard let group else { return try trace.json() }
        let origin = trace.origin ?? 0
        // This rank's first span on the wall clock, in nanoseconds; 0 where the device's clock
        // is not the host's.
        let wallOrigin =
            network.devices.allSatisfy { $0.kind == .cpu }
            ? Double(origin) + Date().timeIntervalSince1970 * 1e9
                - Double(DispatchTime.now().uptimeNanoseconds)
            : 0
        let events = trace.events(
            origin: origin, pid: group.rank + 1, processName: "rank \(group.rank)")
        guard group.rank == 0 else {
            let payload = try JSONSerialization.data(
                withJSONObject: ["origin": wallOrigin, "events": events])
            try group.send(Array(payload), to: 0, tag: ProcessGroupTag.trace)
            return nil
        }
        var parts = [(origin: wallOrigin, events: events)]
        for peer in 1..<group.size {
            let payload = try group.receive(from: peer, tag: ProcessGroupTag.trace)
            guard
                let object = try? JSONSerialization.jsonObject(with: Data(payload))
                    as? [String: Any],
                let peerOrigin = object["origin"] as? Double,
                let peerEvents = object["events"] as? [[String: Any]]
            else {
                throw SigPropError.configuration(
                    "rank \(peer) sent a trace that is not one: the ranks run different versions "
                        + "of train")
            }
            parts.append((peerOrigin, peerEvents))
        }
        let aligned = parts.allSatisfy { $0.origin > 0 }
        let start = parts.map(\.origin).min() ?? 0
        let merged = parts.flatMap { part in
            let shift = aligned ? (part.origin - start) / 1000 : 0
            return part.events.map { event in
                var event = event
                if let time = event["ts"] as? Double { event["ts"] = time + shift }
                return event
            }
        }
        return try Trace.json(merged)
    }
}
