"""Plots for docs/benchmarks/jetmoe-model.md from the CSVs in results/ (needs matplotlib, the
`bench` dependency group). Uses the newest measurement session (rows within 30 minutes of the
newest row), the newest row per (impl, mode, tokens, routing) in it.

    python packages/jetmoe-model/benchmarks/plot_results.py
"""

from __future__ import annotations

import csv
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "benchmarks"  # plots live with the page
COLORS = {
    "loop": "tab:gray",
    "grouped_mm": "tab:blue",
    "triton": "tab:red",
    "transformers": "tab:green",
    "scattermoe": "tab:purple",
    "dense_roofline": "black",
}


def latest(rows, key, window_min: float = 30.0):
    """The newest row per key, from the newest measurement session only (rows within
    ``window_min`` minutes of the newest), so one plot never mixes machines or code versions."""
    from datetime import datetime, timedelta

    rows = sorted(rows, key=lambda r: r.get("timestamp", ""))
    if not rows:
        return []
    newest = datetime.fromisoformat(rows[-1]["timestamp"])
    start = newest - timedelta(minutes=window_min)
    out = {}
    for row in rows:
        if datetime.fromisoformat(row["timestamp"]) >= start:
            out[key(row)] = row
    return list(out.values())


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = RESULTS / "moe_layer.csv"
    if path.exists():
        rows = latest(
            list(csv.DictReader(path.open())),
            lambda r: (r["impl"], r["mode"], r["tokens"], r["routing"]),
        )
        fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
        for i, routing in enumerate(("uniform", "skewed")):
            for j, mode in enumerate(("fwd", "fwd+bwd")):
                ax = axes[i][j]
                for impl, color in COLORS.items():
                    pts = sorted(
                        (int(r["tokens"]), float(r["median_ms"]))
                        for r in rows
                        if r["impl"] == impl and r["mode"] == mode and r["routing"] == routing
                    )
                    if pts:
                        style = "--" if impl == "dense_roofline" else "-o"
                        ax.plot(*zip(*pts, strict=True), style, color=color, label=impl, ms=3)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"MoE-MLP layer, {routing} routing, {mode}")
                ax.set_xlabel("tokens")
                ax.set_ylabel("ms (median)")
                ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle("JetMoE-8B MoE layer (d 2048, ffn 5632, 8 experts, top-2, bf16), H100")
        fig.tight_layout()
        fig.savefig(DOCS / "jetmoe-model-moe-layer.png", dpi=110)
        print(f"wrote {DOCS / 'jetmoe-model-moe-layer.png'}")
        decode = [
            (impl, mode)
            for impl in ("loop", "transformers", "scattermoe", "grouped_mm", "triton")
            for mode in ("fwd", "fwd_graph")
        ]
        fig, ax = plt.subplots(figsize=(10, 3.5))
        width = 0.8 / len(decode)
        for i, (impl, mode) in enumerate(decode):
            pts = {
                int(r["tokens"]): float(r["median_ms"])
                for r in rows
                if r["impl"] == impl and r["mode"] == mode and r["routing"] == "uniform"
            }
            if not pts.get(1):
                continue
            xs = [j + i * width for j in range(2)]
            label = impl + (" (CUDA graph)" if mode == "fwd_graph" else " (eager)")
            hatch = "//" if mode == "fwd_graph" else None
            ax.bar(xs, [pts.get(1, 0), pts.get(16, 0)], width, label=label,
                   color=COLORS[impl], hatch=hatch, edgecolor="white")  # fmt: skip
        ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["1 token", "16 tokens"])
        ax.set_ylabel("ms per layer forward (median)")
        ax.set_title("Decode-size MoE layer forward (no_grad), uniform routing, H100")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(DOCS / "jetmoe-model-decode.png", dpi=110)
        print(f"wrote {DOCS / 'jetmoe-model-decode.png'}")
    path = RESULTS / "train_step.csv"
    if path.exists():
        rows = latest(list(csv.DictReader(path.open())), lambda r: r["impl"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [r["impl"] for r in rows]
        axes[0].bar(names, [float(r["tokens_per_s"]) for r in rows], color="tab:blue")
        axes[0].set_ylabel("tokens / s")
        axes[1].bar(names, [float(r["peak_gb"]) for r in rows], color="tab:orange")
        axes[1].set_ylabel("peak GiB")
        fig.suptitle("1.1B JetMoE training step (bf16, AdamW, batch 4 x 2048), H100")
        fig.tight_layout()
        fig.savefig(DOCS / "jetmoe-model-train-step.png", dpi=110)
        print(f"wrote {DOCS / 'jetmoe-model-train-step.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
