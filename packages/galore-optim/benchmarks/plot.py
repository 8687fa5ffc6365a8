"""Plots for docs/benchmarks/galore-optim.md from the CSVs in results/ (needs the bench group)."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
DOCS = HERE.parents[2] / "docs" / "benchmarks"


COLORS = {  # one colour per run in every panel
    "adamw": "tab:blue",
    "galore_torch": "tab:red",
    "galore_optim_exact": "tab:orange",
    "galore_optim_randomized": "tab:green",
}


def read(name: str) -> list[dict]:
    with open(HERE / "results" / name, newline="") as f:
        return list(csv.DictReader(f))


def plot_loss() -> None:
    rows = read("convergence.csv")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    curves = {"train": defaultdict(list), "val": defaultdict(list)}
    for r in rows:
        curves[r["split"]][r["run"]].append((int(r["tokens"]) / 1e6, float(r["loss"])))
    for split, ax in zip(("train", "val"), axes[:2], strict=True):
        ys = []
        for run, pts in curves[split].items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=run, lw=1.2, c=COLORS.get(run))
            ys += [p[1] for p in pts[len(pts) // 5 :]]
        if ys:  # skip the first fifth: the early loss is an order above the rest
            ax.set_ylim(min(ys) - 0.05, max(ys) + 0.05)
        ax.set_xlabel("tokens (M)")
        ax.set_ylabel(f"{split} loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    ref = dict(curves["val"].get("galore_torch", []))
    ax = axes[2]
    off_scale = []
    for run, pts in curves["val"].items():
        rel = [(t, 100 * (math.exp(v - ref[t]) - 1)) for t, v in sorted(pts) if t in ref]
        if rel and max(abs(p[1]) for p in rel) > 5:  # AdamW: far off this scale
            off_scale.append(f"{run} {rel[-1][1]:+.1f}% at the end")
            continue
        ax.plot(
            [p[0] for p in rel],
            [p[1] for p in rel],
            "o-",
            ms=3,
            label=run,
            lw=1.2,
            c=COLORS.get(run),
        )
    ax.axhspan(-1, 1, color="tab:green", alpha=0.1, label="±1% (target vs galore-torch)")
    ax.set_xlabel("tokens (M)")
    ax.set_ylabel("val perplexity vs galore-torch (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    axes[0].set_title("LLaMA-60M (58.1M params, vocab 32000): train loss")
    axes[1].set_title("validation loss")
    axes[2].set_title(
        "val perplexity vs galore-torch"
        + (f" (off scale: {', '.join(off_scale)})" if off_scale else ""),
        fontsize=9,
    )
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
    held = [float(latest[n].get("state_bytes_allocated") or "nan") / 2**20 for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], step, 0.4, label="step (no refresh)")
    axes[0].bar([i + 0.2 for i in x], amort, 0.4, label="step + refresh / T")
    axes[0].set_ylabel("ms per step (7 matrices of one LLaMA-1B layer)")
    axes[0].set_yscale("log")
    axes[1].bar([i - 0.2 for i in x], mem, 0.4, color="tab:green", label="state tensors")
    axes[1].bar([i + 0.2 for i in x], held, 0.4, color="tab:olive", label="held after step 1")
    axes[1].set_ylabel("optimizer memory (MiB, one layer)")
    axes[1].legend()
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
