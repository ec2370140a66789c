"""Draws results/bench.png from results/bench.json (cargo xtask bench)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
r = json.load(open(src))
runs = r["throughput"]
cases = []
for x in runs:
    if x["case"] not in cases:
        cases.append(x["case"])
sizes = sorted({x["frame_bytes"] for x in runs})
fig, ax = plt.subplots(figsize=(11, 5.5))
width = 0.8 / len(sizes)
for i, size in enumerate(sizes):
    pick = [next((x for x in runs if x["case"] == c and x["frame_bytes"] == size), None) for c in cases]
    vals = [x.get("vs_floor", 0) if x else 0 for x in pick]
    bars = ax.barh([j + i * width for j in range(len(cases))], vals, height=width, label=f"{size}-byte frames")
    for b, x in zip(bars, pick):
        if x:
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2,
                    f" {x.get('vs_floor', 0):.2f}x  ({x['pps'] / 1e6:.2f} Mpps)", va="center", fontsize=8)
ax.set_yticks([j + width * (len(sizes) - 1) / 2 for j in range(len(cases))])
ax.set_yticklabels(cases)
ax.invert_yaxis()
ax.set_xlabel("delivered packets/s relative to the floor on the same path (median of per-round ratios); median Mpps in brackets")
ax.set_xlim(0, 1.3)
m = r["machine"]
ax.set_title(f"sipvip throughput vs the XDP floor, {r.get('rounds', 1)} interleaved rounds ({m['cpus']} vCPUs, kernel {m['kernel']})")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(f"chart: {dst}")
