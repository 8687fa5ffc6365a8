"""Plot results/quality_cpu.csv into docs/benchmarks/kvprune.png (needs the `bench` group).

python packages/kvprune/benchmarks/plot_quality.py
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
CSV = HERE / "results" / "quality_cpu.csv"
PNG = HERE.parents[2] / "docs" / "benchmarks" / "kvprune.png"
TITLES = {
    "ppl": "(a) continuation perplexity (lower is better)",
    "needle": "(b) needle retrieval rate",
    "agree": "(c) greedy prefix agreement with full cache",
}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(CSV.open()))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, bench in zip(axes, TITLES, strict=True):
        points = defaultdict(list)
        for r in rows:
            if r["bench"] == bench:
                points[r["method"]].append((float(r["kept_fraction"]), float(r["value"])))
        for method, pts in sorted(points.items()):
            # average repeated measurements (documents, depths) per method
            frac = sum(p[0] for p in pts) / len(pts)
            val = sum(p[1] for p in pts) / len(pts)
            marker = "*" if method.startswith("fastgen") else ("s" if method == "full" else "o")
            ax.scatter([frac], [val], marker=marker, s=80, label=method)
            ax.annotate(method, (frac, val), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("kept fraction of prompt KV entries")
        ax.set_title(TITLES[bench], fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("kvprune on SmolLM2-135M-Instruct (CPU, measured)", fontsize=11)
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=110)
    print(f"wrote {PNG}")


if __name__ == "__main__":
    main()
