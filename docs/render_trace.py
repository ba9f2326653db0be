#!/usr/bin/env python3
"""Draws a SigProp trace (train --trace FILE) as an SVG timeline: one row per stage, one box
per span (forward blue, update orange, output layer green), batch numbers inside the boxes
wide enough to hold them, and under them a thin grey mark per kernel (hover for its name). --batches FIRST:LAST keeps those batches (1-based, inclusive), e.g.
2:9 to leave out the first batch, whose time includes the driver's first-launch compilation.

    python3 docs/render_trace.py docs/trace-mlp-cpu.json docs/trace-mlp-cpu.svg [--batches 2:9]
"""
import json
import sys

COLORS = {"forward": "#4C78A8", "update": "#F58518", "train": "#54A24B"}


def main():
    args = sys.argv[1:]
    first, last = 1, None
    if "--batches" in args:
        i = args.index("--batches")
        first, last = (int(x) for x in args[i + 1].split(":"))
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    source, target = args
    trace = json.load(open(source))["traceEvents"]
    rows = {e["tid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    chosen = [e for e in trace if e["ph"] == "X" and first <= e["args"]["batch"] and (last is None or e["args"]["batch"] <= last)]
    spans = [e for e in chosen if e.get("cat") != "kernel"]
    kernels = [e for e in chosen if e.get("cat") == "kernel"]
    if not spans:
        sys.exit(f"{source}: no spans")
    start = min(e["ts"] for e in spans)
    end = max(e["ts"] + e["dur"] for e in spans)
    width, label, row_height, top = 1100, 80, 34, 30
    scale = (width - label - 10) / max(end - start, 1e-9)
    height = top + row_height * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{label}" y="18" font-size="12">{source.split("/")[-1]}: {(end - start) / 1000:.1f} ms, '
           'forward (blue), update (orange), output layer (green)</text>']
    for index, (tid, name) in enumerate(sorted(rows.items())):
        y = top + index * row_height
        out.append(f'<text x="4" y="{y + 17}">{name}</text>')
        out.append(f'<line x1="{label}" y1="{y + row_height - 2}" x2="{width - 10}" y2="{y + row_height - 2}" stroke="#ddd"/>')
        for e in (e for e in spans if e["tid"] == tid):
            x = label + (e["ts"] - start) * scale
            w = max(e["dur"] * scale, 0.5)
            part = e["name"].split(" ")[0].split(".")[-1]
            out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_height - 14}" fill="{COLORS.get(part, "#999")}">'
                       f'<title>{e["name"]}: {e["dur"] / 1000:.2f} ms</title></rect>')
            if w > 16:
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + 17}" fill="white" text-anchor="middle">{e["args"]["batch"]}</text>')
        for e in (e for e in kernels if e["tid"] == tid):
            x = label + (e["ts"] - start) * scale
            w = max(e["dur"] * scale, 0.4)
            out.append(f'<rect x="{x:.1f}" y="{y + row_height - 9}" width="{w:.1f}" height="5" fill="#888">'
                       f'<title>{e["name"]}: {e["dur"] / 1000:.3f} ms</title></rect>')
    axis_y = top + len(rows) * row_height + 14
    for tick in range(0, 11):
        x = label + tick * (width - label - 10) / 10
        out.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="middle" fill="#555">{(end - start) * tick / 10 / 1000:.0f} ms</text>')
    out.append("</svg>")
    open(target, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
