"""Plots for docs/benchmarks/jetmoe-model.md from the CSVs in results/ (needs matplotlib, the
`bench` dependency group). Uses the newest run per (impl, mode, tokens, routing).

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
    "dense_roofline": "black",
}


def latest(rows, key):
    out = {}
    for row in sorted(rows, key=lambda r: r.get("timestamp", "")):
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
