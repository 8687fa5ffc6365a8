"""Plots for docs/benchmarks/galore-optim.md from the CSVs in results/ (needs the bench group)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
DOCS = HERE.parents[2] / "docs" / "benchmarks"


def read(name: str) -> list[dict]:
    with open(HERE / "results" / name, newline="") as f:
        return list(csv.DictReader(f))


def plot_loss() -> None:
    rows = read("convergence.csv")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split, ax in zip(("train", "val"), axes, strict=True):
        curves = defaultdict(list)
        for r in rows:
            if r["split"] == split:
                curves[r["run"]].append((int(r["tokens"]) / 1e6, float(r["loss"])))
        for run, pts in curves.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=run, lw=1.2)
        ax.set_xlabel("tokens (M)")
        ax.set_ylabel(f"{split} loss (nats/byte)")
        ax.set_ylim(top=2.0)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("LLaMA-60M body, byte-level, stdlib text: train loss")
    axes[1].set_title("validation loss")
    fig.tight_layout()
    fig.savefig(DOCS / "galore-optim-loss.png", dpi=110)


def plot_step() -> None:
    rows = [r for r in read("step.csv") if r["rank"] == "512"]
    latest = {}
    for r in rows:  # last measurement of each optimizer
        latest[r["optimizer"]] = r
    names = list(latest)
    step = [float(latest[n]["step_ms"]) for n in names]
    amort = [float(latest[n]["amortized_step_ms"]) for n in names]
    mem = [float(latest[n]["state_bytes"]) / 2**20 for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], step, 0.4, label="step (no refresh)")
    axes[0].bar([i + 0.2 for i in x], amort, 0.4, label="step + refresh / T")
    axes[0].set_ylabel("ms per step (7 matrices of one LLaMA-1B layer)")
    axes[0].set_yscale("log")
    axes[1].bar(x, mem, color="tab:green")
    axes[1].set_ylabel("optimizer state (MiB, one layer)")
    for ax in axes:
        ax.set_xticks(list(x), names, rotation=35, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    axes[0].set_title(f"H100, fp32, rank 512, T {latest[names[0]]['gap']}")
    axes[1].set_title("state memory")
    fig.tight_layout()
    fig.savefig(DOCS / "galore-optim-step.png", dpi=110)


if __name__ == "__main__":
    DOCS.mkdir(parents=True, exist_ok=True)
    plot_loss()
    plot_step()
