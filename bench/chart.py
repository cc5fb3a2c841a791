"""Draws bench/ingest.sh's results: latency against load (one line per binary and table size) and
acked pushes/s at the highest concurrency by table size. Usage: python chart.py results.csv out.svg
(matplotlib, from PyPI)."""

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str, out: str) -> None:
    rows = list(csv.DictReader(open(path)))
    curves = defaultdict(list)
    for r in rows:
        curves[(r["binary"], int(r["size"]))].append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"base": "tab:gray", "new": "tab:blue"}
    for (binary, size), points in sorted(curves.items()):
        points.sort(key=lambda r: int(r["concurrency"]))
        x = [float(p["acked_per_s"]) for p in points]
        label = f"{binary}, {size:,} rows"
        dash = {0: "-", 1_000_000: "--"}.get(size, ":")
        left.plot(x, [float(p["p50_ms"]) for p in points], dash, marker="o", color=styles.get(binary), label=f"p50 {label}")
        left.plot(x, [float(p["p99_ms"]) for p in points], dash, marker="^", color=styles.get(binary), alpha=0.5, label=f"p99 {label}")
        for p, xv in zip(points, x if size == 0 else []):
            left.annotate(f"c={p['concurrency']}", (xv, float(p["p50_ms"])), fontsize=7, xytext=(3, -9), textcoords="offset points")
    left.set_xlabel("acked pushes/s")
    left.set_ylabel("ack latency, ms")
    left.set_yscale("log")
    left.set_title("Latency against load (wrk, concurrency 1…64)")
    left.legend(fontsize=6)
    left.grid(alpha=0.3)

    top = max(int(r["concurrency"]) for r in rows)
    sizes = sorted({int(r["size"]) for r in rows})
    width = 0.38
    for i, binary in enumerate(["base", "new"]):
        values = []
        for size in sizes:
            match = [r for r in rows if r["binary"] == binary and int(r["size"]) == size and int(r["concurrency"]) == top]
            values.append(float(match[0]["acked_per_s"]) if match else 0)
        bars = right.bar([j + (i - 0.5) * width for j in range(len(sizes))], values, width, color=styles[binary], label=binary)
        right.bar_label(bars, fmt="%.0f", fontsize=8)
    right.set_xticks(range(len(sizes)), [f"{s:,}" for s in sizes])
    right.set_xlabel("rows already in streaming_events")
    right.set_ylabel(f"acked pushes/s at c={top}")
    right.set_title("Throughput as the table grows")
    right.legend()
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
