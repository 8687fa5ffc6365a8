"""Plots for docs/benchmarks/rho-select.md from the CSVs in results/.

    python packages/rho-select/benchmarks/plot.py

- ``rho-select.png``: validation loss on clean text over tokens seen (selection_cpu.csv: mean
  over seeds, band = min..max) and the CPU loss benchmark (loss_cpu.csv: time and peak memory).
- ``rho-select-selection-gpu.png``: the same validation curves from selection_gpu.csv, when a
  GPU run's CSV has been copied to results/.
- ``rho-select-gpu.png``: time and peak extra memory per method and size (loss_gpu*.csv), when
  GPU results exist.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parents[2] / "docs" / "benchmarks"
COLORS = {
    "full": "tab:blue",
    "selective": "tab:red",
    "random": "tab:gray",
    "reference": "tab:green",
}


def read(name: str) -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob(name)):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def plot_selection(ax, rows: list[dict]) -> None:
    """Validation loss over tokens seen per method: mean over seeds, band min..max; the
    reference (trained on clean text only) dashed."""
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        curves[r["method"]][int(r["tokens_seen"])].append(float(r["val_loss"]))
    for method, points in curves.items():
        xs = sorted(points)
        mean = [sum(points[x]) / len(points[x]) for x in xs]
        style = "--" if method == "reference" else "-"
        label = "reference (clean only)" if method == "reference" else method
        ax.plot([x / 1e3 for x in xs], mean, style, label=label, color=COLORS.get(method))
        ax.fill_between(
            [x / 1e3 for x in xs],
            [min(points[x]) for x in xs],
            [max(points[x]) for x in xs],
            color=COLORS.get(method),
            alpha=0.2,
        )
    seeds = sorted({r["seed"] for r in rows})
    first = next((r for r in rows if r["method"] == "selective"), rows[0] if rows else {})
    params = f"{int(first['params']) / 1e6:.1f}M params, " if first.get("params") else ""
    ax.set_xlabel("tokens seen (thousands)")
    ax.set_ylabel("validation loss, clean text (nats/token)")
    ax.set_title(
        f"Does selection help? {params}k={first.get('ratio', '')}, {len(seeds)} seeds "
        f"(band: min-max)\n{first.get('device', '')}, {first.get('dtype', '')}",
        fontsize=10,
    )
    ax.legend()
    ax.grid(alpha=0.3)


def plot_loss_cpu(ax) -> None:
    rows = [r for r in read("loss_cpu.csv") if r.get("benchmark") == "loss_fwd_bwd"]
    latest: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["metric"] in ("time_s", "peak_extra_mib"):
            latest[(r["method"], r["metric"])] = float(r["value"])
    methods = ["naive", "rho_select"]
    times = [latest.get((m, "time_s"), 0.0) for m in methods]
    mems = [latest.get((m, "peak_extra_mib"), 0.0) / 1024 for m in methods]
    x = range(len(methods))
    ax.bar([i - 0.2 for i in x], times, width=0.4, label="time (s)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.bar(
        [i + 0.2 for i in x], mems, width=0.4, label="peak extra memory (GiB)", color="tab:orange"
    )
    ax.set_xticks(list(x), methods)
    ax.set_ylabel("forward + backward time (s)")
    ax2.set_ylabel("peak extra memory (GiB)")
    ax.set_title("Loss at V=49152, H=576, 8k tokens, fp32, k=0.6 (2-core CPU)")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")


def plot_gpu(rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    by: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("oom") == "True" or not r.get("time_ms"):
            continue
        key = f"{int(r['tokens']) // 1024}k/{int(r['vocab']) // 1000}k"
        by[(r["method"], key)]["time"].append(float(r["time_ms"]))
        by[(r["method"], key)]["mem"].append(float(r["peak_extra_gib"]))
    sizes = sorted(
        {k for _, k in by}, key=lambda s: (int(s.split("/")[1][:-1]), int(s.split("/")[0][:-1]))
    )
    methods = sorted({m for m, _ in by})
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        for ax, metric in zip(axes, ("time", "mem"), strict=True):
            values = [min(by[(m, s)][metric]) if by[(m, s)][metric] else 0 for s in sizes]
            ax.bar([i + j * width for i in range(len(sizes))], values, width=width, label=m)
    for ax, label in zip(axes, ("fwd+bwd time (ms)", "peak extra memory (GiB)"), strict=True):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], sizes)
        ax.set_xlabel("tokens / vocabulary")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    fig.suptitle(f"Selective loss, bf16, hidden 4096, k=0.6 ({rows[0].get('device', 'GPU')})")
    fig.tight_layout()
    fig.savefig(DOCS / "rho-select-gpu.png", dpi=110)


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    plot_selection(axes[0], read("selection_cpu.csv"))
    plot_loss_cpu(axes[1])
    fig.tight_layout()
    fig.savefig(DOCS / "rho-select.png", dpi=110)
    selection_gpu = read("selection_gpu.csv")
    if selection_gpu:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        plot_selection(ax, selection_gpu)
        fig.tight_layout()
        fig.savefig(DOCS / "rho-select-selection-gpu.png", dpi=110)
    gpu = read("loss_gpu*.csv")
    if gpu:
        plot_gpu(gpu)


if __name__ == "__main__":
    main()
