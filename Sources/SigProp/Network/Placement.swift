/// How stages spread over devices: contiguous groups of balanced work, one group per device.
enum Placement {
    /// Stage -> group (device) index: contiguous groups, in order, that make the largest
    /// group's cost as small as it can be (every device gets a stage while there are enough).
    static func groups(costs: [Double], groups: Int) -> [Int] {
        let n = costs.count
        let k = max(1, min(groups, n))
        let prefix = costs.reduce(into: [0.0]) { $0.append($0.last! + $1) }
        // best[j][i]: the least largest-group cost of stages 0..<i in j + 1 groups; cut[j][i] where
        // the last group starts.
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: n + 1), count: k)
        var cut = [[Int]](repeating: [Int](repeating: 0, count: n + 1), count: k)
        for i in 1...n { best[0][i] = prefix[i] }
        for j in stride(from: 1, to: k, by: 1) {
            for i in (j + 1)...n {
                for start in j..<i {
                    let value = max(best[j - 1][start], prefix[i] - prefix[start])
                    if value < best[j][i] {
                        best[j][i] = value
                        cut[j][i] = start
                    }
                }
            }
        }
        var assignment = [Int](repeating: 0, count: n)
        var end = n
        for j in stride(from: k - 1, through: 0, by: -1) {
            let start = j == 0 ? 0 : cut[j][end]
            for stage in start..<end { assignment[stage] = j }
            end = start
        }
        return assignment
    }
}

extension NetworkPlan {
    /// The device of each stage on `devices`: contiguous groups, in stage order, balanced by
    /// multiply-adds (a stage's update costs about twice its forward, in proportion).
    public func stageDevices(on devices: [Device]) -> [Device] {
        Placement.groups(costs: stages.map(\.multiplyAdds), groups: devices.count).map {
            devices[$0]
        }
    }
}
