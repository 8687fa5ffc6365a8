"""Plots for docs/benchmarks/megalodon-model.md from the CSVs in results/.

python plot_results.py            # writes docs/benchmarks/megalodon-model-*.png
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[2] / "docs" / "benchmarks"


def rows(name: str) -> list[dict[str, str]]:
    path = HERE / "results" / name
    return list(csv.DictReader(path.open())) if path.exists() else []


def plot_cema(data, name, suffix="cpu", time_key="median_ms"):
    if not data:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    passes = ("fwd", "fwd+bwd")
    for ax, which in zip(axes, passes, strict=True):
        series = defaultdict(list)
        for r in data:
            if r.get("pass", which) == which and r.get(time_key):
                series[r["path"]].append((int(r["length"]), float(r[time_key])))
        for path, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=path)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_title(f"CEMA {which}, D={data[0]['dim']}, N={data[0]['ndim']}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms per call (median)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(DOCS / f"{name}-cema-{suffix}.png", dpi=110)


def plot_decode(data, name):
    if not data:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model in ("megalodon", "llama"):
        pts = sorted(
            (int(r["context"]), float(r["cache_bytes_at_context"]) / 2**20,
             float(r["ms_per_token_median"]))
            for r in data if r["model"] == model and r["ms_per_token_median"]
        )  # fmt: skip
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=model)
    peak = [float(r["cache_bytes_at_context"]) / 2**20 for r in data
            if r["model"] == "megalodon" and not r["ms_per_token_median"]]  # fmt: skip
    if peak:
        axes[0].axhline(peak[0], ls="--", color="C0", label="megalodon, largest (full chunk K/V)")
    for ax, label in zip(axes, ("cache MiB", "ms per generated token"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("decoding on the CPU: Megalodon (flat) vs Llama with DynamicCache (growing)")
    fig.tight_layout()
    fig.savefig(DOCS / f"{name}-decode-cpu.png", dpi=110)


def main() -> None:
    name = "megalodon-model"
    plot_cema(rows("cema_cpu.csv"), name)
    gpu = rows("cema_gpu.csv")
    if gpu:
        split = [dict(r, **{"pass": "fwd", "t": r.get("fwd_ms", "")}) for r in gpu] + [
            dict(r, **{"pass": "fwd+bwd", "t": r.get("fwd_bwd_ms", "")}) for r in gpu
        ]
        plot_cema(split, name, "gpu", "t")
    plot_decode(rows("decode_cpu.csv"), name)
    print("plots written to", DOCS)


if __name__ == "__main__":
    main()
