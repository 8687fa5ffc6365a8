"""Plots for docs/benchmarks/jetmoe-model.md from the CSVs in results/ (needs matplotlib, the
`bench` dependency group). Uses the newest measurement (rows within 30 minutes of the newest
row), the newest row per (impl, mode, tokens, routing) in it.

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
    """The newest row per key, from the newest measurement only (rows within
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
    path = RESULTS / "moe_layer_interleaved.csv"
    if path.exists():  # the newest interleaved run: each backend's time over the dense roofline's
        rows = sorted(csv.DictReader(path.open()), key=lambda r: r["timestamp"])
        # one kernel configuration: the newest rows' (``config``, e.g. "defaults")
        rows = [r for r in rows if r.get("config", "") == rows[-1].get("config", "")]
        rows = latest(rows, lambda r: (r["impl"], r["mode"], r["tokens"], r["routing"]))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, mode in zip(axes, ("fwd", "fwd+bwd"), strict=True):
            dense = {(r["tokens"], r["routing"]): float(r["median_ms"]) for r in rows
                     if r["impl"] == "dense_roofline" and r["mode"] == mode}  # fmt: skip
            for impl in ("grouped_mm", "triton", "transformers"):
                for routing, style in (("uniform", "-o"), ("skewed", "--s")):
                    pts = sorted(
                        (int(r["tokens"]), float(r["median_ms"]) / dense[r["tokens"], routing])
                        for r in rows
                        if r["impl"] == impl
                        and r["mode"] == mode
                        and r["routing"] == routing
                        and (r["tokens"], routing) in dense
                    )
                    if pts:
                        ax.plot(*zip(*pts, strict=True), style, color=COLORS[impl], ms=3,
                                label=f"{impl}, {routing}")  # fmt: skip
            ax.axhline(1.3, color="black", lw=0.8, ls=":", label="goal: 1.3x dense (8k and up)")
            ax.set_xscale("log", base=2)
            ax.set_ylim(0.9, 3.0)
            ax.set_title(f"MoE-MLP layer, {mode}")
            ax.set_xlabel("tokens")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("time / dense GEMM pair of the same FLOPs")
        axes[0].legend(fontsize=7)
        fig.suptitle("JetMoE-8B MoE layer vs the dense roofline, interleaved medians, H100 "
                     f"(kernel config: {rows[-1].get('config') or 'as run'})", fontsize=10)  # fmt: skip
        fig.tight_layout()
        fig.savefig(DOCS / "jetmoe-model-moe-layer-vs-roofline.png", dpi=110)
        print(f"wrote {DOCS / 'jetmoe-model-moe-layer-vs-roofline.png'}")
    path = RESULTS / "train_step_interleaved.csv"
    peaks = RESULTS / "train_step.csv"
    if path.exists() and peaks.exists():
        # step times: the newest interleaved run; peak memory: the newest sequential row per
        # backend (each backend in its own process)
        rows = latest(list(csv.DictReader(path.open())), lambda r: r["impl"])
        peak = {}
        for r in sorted(csv.DictReader(peaks.open()), key=lambda r: r["timestamp"]):
            peak[r["impl"]] = float(r["peak_gb"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [r["impl"] for r in rows]
        axes[0].bar(names, [float(r["tokens_per_s"]) for r in rows], color="tab:blue")
        axes[0].set_ylabel("tokens / s (interleaved median)")
        axes[1].bar(names, [peak.get(n, 0.0) for n in names], color="tab:orange")
        axes[1].set_ylabel("peak GiB (own process)")
        fig.suptitle("1.1B JetMoE training step (bf16, AdamW, batch 4 x 2048), H100")
        fig.tight_layout()
        fig.savefig(DOCS / "jetmoe-model-train-step.png", dpi=110)
        print(f"wrote {DOCS / 'jetmoe-model-train-step.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
