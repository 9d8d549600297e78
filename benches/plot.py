"""Turns a benches/compare.sh results.csv into table.md and plot.png in the same directory.

Usage: plot.py DIR TITLE
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, title = sys.argv[1], sys.argv[2]
# A workload measured more than once (the restores straight to the server, in rounds) is
# shown as the median of its runs, each figure on its own.
def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

runs = {}
for r in csv.DictReader(open(os.path.join(out, "results.csv"))):
    runs.setdefault((r["workload"], r["latency_ms"], r["threads"], r["tool"]), []).append(r)
rows = []
for measured in runs.values():
    r = dict(measured[0], runs=len(measured))
    for key in ("wall_s", "cpu_s", "machine_cpu_s"):
        r[key] = str(median(float(m[key]) for m in measured))
    r["peak_rss_kib"] = str(max(int(m["peak_rss_kib"]) for m in measured))
    rows.append(r)
for r in rows:
    wall, n, cpu = float(r["wall_s"]), int(r["objects"]), float(r["cpu_s"])
    r["label"] = f'{r["workload"]} {r["latency_ms"]} ms/{r["threads"]}'
    r["rate"] = n / wall if wall else 0.0
    r["mib_s"] = int(r["bytes"]) / wall / 2**20 if wall else 0.0
    r["cpu_ms"] = cpu * 1000 / n if n else 0.0
    r["rss_mib"] = int(r["peak_rss_kib"]) / 1024

# Ratio of s3mirror to the best peer (another tool) of the same workload and setting.
def best_peer(label, key, higher_is_better):
    peers = [r[key] for r in rows if r["label"] == label and not r["tool"].startswith("s3mirror")]
    if not peers:
        return None
    return max(peers) if higher_is_better else min(peers)

def tool_label(r):
    return r["tool"] if r["runs"] == 1 else f'{r["tool"]} (median of {r["runs"]})'

lines = [
    f"{title}",
    "",
    "| workload | latency | transfers | tool | wall s | objects/s | MiB/s | CPU ms/object | machine CPU s | peak RSS MiB | requests | vs best peer |",
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
]
for r in rows:
    ratio = ""
    if r["tool"] == "s3mirror":
        rate = best_peer(r["label"], "rate", True)
        cpu = best_peer(r["label"], "cpu_ms", False)
        if rate:
            ratio = f'{r["rate"] / rate:.2f}x objects/s'
            if cpu:
                ratio += f', {r["cpu_ms"] / cpu:.2f}x CPU'
    lines.append(
        f'| {r["workload"]} | {r["latency_ms"]} ms | {r["threads"]} | {tool_label(r)} | {float(r["wall_s"]):.2f} | '
        f'{r["rate"]:.0f} | {r["mib_s"]:.1f} | {r["cpu_ms"]:.3f} | {float(r["machine_cpu_s"]):.1f} | {r["rss_mib"]:.0f} | {r["requests"]} | {ratio} |'
    )
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")

# Objects/s for the small-object workloads, MiB/s for large files and restores; listings
# are in the table.
tools = list(dict.fromkeys(r["tool"] for r in rows))
by_bytes = (
    "large", "check-large", "download-large", "restore", "restore-slowdown", "restore-direct",
    "restore-md5-direct",
)
panels = [
    ("objects/s (log scale, higher is better)", "rate",
     lambda w: w not in by_bytes and not w.startswith("listing"), True),
    ("MiB/s (higher is better)", "mib_s", lambda w: w in by_bytes, False),
]
fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [5, 2.4]})
for ax, (ylabel, key, wanted, log) in zip(axes, panels):
    labels = list(dict.fromkeys(r["label"] for r in rows if wanted(r["workload"])))
    shown = [t for t in tools if any(r["tool"] == t and r["label"] in labels for r in rows)]
    width = 0.8 / max(len(shown), 1)
    for i, tool in enumerate(shown):
        values = [next((r[key] for r in rows if r["tool"] == tool and r["label"] == l), 0) for l in labels]
        bars = ax.bar([x + i * width for x in range(len(labels))], values, width, label=tool,
                      color=f"C{tools.index(tool)}")
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(labels))], labels, fontsize=8,
                  rotation=20, ha="right")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
fig.suptitle(title, fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(out, "plot.png"), dpi=110)
