"""Draws bench/rss_growth.sh's tables: acked pushes/s and RSS against the rows the host inserted, one
line per run. Usage: python growth_chart.py out.svg LABEL=table.txt [LABEL=table.txt ...] (each file is
the script's printed output; matplotlib, from PyPI)."""

import sys

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402


def passes(path: str) -> list[tuple[int, int, int | None]]:
    """(rows, RSS MiB, acked/s of the pass before) per table line."""
    out = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            out.append((int(cells[0]), int(cells[1]), int(cells[2]) if cells[2].isdigit() else None))
    return out


def main(out: str, runs: list[str]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for run in runs:
        label, path = run.split("=", 1)
        points = passes(path)
        millions = [r / 1e6 for r, _, _ in points]
        acked = [(m, a) for m, (_, _, a) in zip(millions, points) if a is not None]
        left.plot([m for m, _ in acked], [a for _, a in acked], marker="o", label=label)
        right.plot(millions, [rss for _, rss, _ in points], marker="o", label=label)
    left.set(title="Throughput as the host inserts (wrk, c=64)", xlabel="rows inserted by the host, millions",
             ylabel="acked pushes/s in the pass before")
    right.set(title="Memory as the host inserts", xlabel="rows inserted by the host, millions", ylabel="RSS, MiB")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
