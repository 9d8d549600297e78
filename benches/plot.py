"""Draws objects/s per tool per workload from a benches/compare.sh results.csv."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target, title = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(source)))
workloads = list(dict.fromkeys(r["workload"] for r in rows))
tools = list(dict.fromkeys(r["tool"] for r in rows))
width = 0.8 / len(tools)
fig, ax = plt.subplots(figsize=(8, 4.5))
for i, tool in enumerate(tools):
    rates = [
        next((float(r["objects_per_s"]) for r in rows if r["tool"] == tool and r["workload"] == w), 0)
        for w in workloads
    ]
    bars = ax.bar([x + i * width for x in range(len(workloads))], rates, width, label=tool)
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
ax.set_xticks([x + width * (len(tools) - 1) / 2 for x in range(len(workloads))], workloads)
ax.set_yscale("log")
ax.set_ylabel("objects/s (log scale, higher is better)")
ax.set_title(title, fontsize=10)
ax.legend()
fig.tight_layout()
fig.savefig(target, dpi=110)
