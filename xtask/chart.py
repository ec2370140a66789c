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
    vals = [next((x["pps"] / 1e6 for x in runs if x["case"] == c and x["frame_bytes"] == size), 0) for c in cases]
    bars = ax.barh([j + i * width for j in range(len(cases))], vals, height=width, label=f"{size}-byte frames")
    for b, v in zip(bars, vals):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.2f}", va="center", fontsize=8)
ax.set_yticks([j + width * (len(sizes) - 1) / 2 for j in range(len(cases))])
ax.set_yticklabels(cases)
ax.invert_yaxis()
ax.set_xlabel("delivered Mpps at the sink")
m = r["machine"]
ax.set_title(f"sipvip throughput, median of {r.get('rounds', 1)} interleaved rounds ({m['cpus']} CPUs, kernel {m['kernel']})")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(f"chart: {dst}")
