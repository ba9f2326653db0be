#!/usr/bin/env python3
"""Predicts the training speed of `train --distributed pipeline` on N machines.

A pipeline over ranks runs each rank's stages on its own machine; only what a stage hands on
crosses to the next rank, sent by a worker thread while the rank computes. In the steady
state a batch therefore leaves the pipeline every

    T_N = max( max over ranks r of  C_r ,  max over boundaries b of  bytes_b / bandwidth + latency )

seconds, where C_r is the compute time of rank r's stages (forward and update, measured on one
machine) and bytes_b what crosses boundary b per batch: the input stream h (B rows) and the
target stream t (one row per class with the K-row shortcut) of the last stage before it. A
backpropagation pipeline sends h forward and d loss / d h back: 2 x B rows.
The speed-up on N machines is T_1 / T_N, with T_1 the sum of every stage's compute time.

Inputs: a Chrome trace of a one-process run on one machine (`train --trace`, sequential
schedule, so that stage spans do not overlap) and `train --describe` of the same model, for
the stages' names, costs and handed-on shapes; the placement is train's own (contiguous
groups balancing multiply-adds).

    python3 Benchmarks/distributed/model.py --trace cnn.json --describe cnn.txt \
        --batch-size 128 --classes 10 --bandwidth 1e9/8 --ranks 1 2 4
"""
import argparse
import json
import re
from collections import defaultdict


def stage_times(trace_path):
    """Mean seconds per batch of each stage's forward + update, over every batch but the first."""
    with open(trace_path) as handle:
        events = json.load(handle)["traceEvents"]
    spans = defaultdict(lambda: defaultdict(float))
    for event in events:
        if event.get("ph") != "X" or event.get("cat") not in ("forward", "update"):
            continue
        stage = event["name"].split(".")[0]
        spans[stage][event["args"]["batch"]] += event["dur"] / 1e6
    return {
        stage: sum(v for b, v in batches.items() if b > 1) / max(1, len(batches) - 1)
        for stage, batches in spans.items()
    }


def describe_table(path):
    """[(stage, macs per sample, floats handed on per sample)] from `train --describe`."""
    rows = []
    for line in open(path):
        match = re.match(r"\s+(block\d+|output)\b.*?\s(\d+(?:x\d+)*)\s+([\d,]+)\s+([\d,]+)\s*$", line)
        if match:
            shape = [int(x) for x in match.group(2).split("x")]
            floats = 1
            for x in shape:
                floats *= x
            rows.append((match.group(1), int(match.group(4).replace(",", "")), floats))
    return rows


def groups(costs, count):
    """train's placement: contiguous groups minimising the largest group's cost."""
    n = len(costs)
    k = max(1, min(count, n))
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(k)]
    cut = [[0] * (n + 1) for _ in range(k)]
    for i in range(1, n + 1):
        best[0][i] = prefix[i]
    for j in range(1, k):
        for i in range(j + 1, n + 1):
            for start in range(j, i):
                value = max(best[j - 1][start], prefix[i] - prefix[start])
                if value < best[j][i]:
                    best[j][i] = value
                    cut[j][i] = start
    assignment = [0] * n
    end = n
    for j in range(k - 1, -1, -1):
        start = 0 if j == 0 else cut[j][end]
        for s in range(start, end):
            assignment[s] = j
        end = start
    return assignment


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", required=True)
    parser.add_argument("--describe", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--bandwidth", default="1e9/8", help="bytes per second (an expression)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per message")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    bandwidth = float(eval(args.bandwidth, {}, {}))
    times = stage_times(args.trace)
    table = describe_table(args.describe)
    names = [row[0] for row in table]
    compute = [times[name] for name in names]
    total = sum(compute)
    print(f"stages: " + ", ".join(f"{n} {1000 * t:.1f} ms" for n, t in zip(names, compute)))
    print(f"one machine: {1000 * total:.1f} ms per batch, {args.batch_size / total:,.0f} samples/s")
    for ranks in args.ranks:
        placement = groups([row[1] for row in table], ranks)
        count = max(placement) + 1
        per_rank = [sum(c for c, r in zip(compute, placement) if r == rank) for rank in range(count)]
        boundaries = [i for i in range(len(table) - 1) if placement[i] != placement[i + 1]]
        sent = [4 * table[i][2] * (args.batch_size + args.classes) for i in boundaries]
        backprop = [2 * 4 * table[i][2] * args.batch_size for i in boundaries]
        link = max([b / bandwidth + args.latency for b in sent], default=0.0)
        period = max(max(per_rank), link)
        print(
            f"{ranks} ranks: compute per rank "
            + " / ".join(f"{1000 * c:.1f}" for c in per_rank)
            + f" ms, sent per boundary "
            + " / ".join(f"{b / 2**20:.2f}" for b in sent)
            + f" MiB (backprop "
            + " / ".join(f"{b / 2**20:.2f}" for b in backprop)
            + f" MiB), link {1000 * link:.1f} ms: {args.batch_size / period:,.0f} samples/s, "
            f"speed-up {total / period:.2f}x, efficiency {total / period / ranks:.0%}"
        )


if __name__ == "__main__":
    main()
