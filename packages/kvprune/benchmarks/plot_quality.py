"""Plot the measured CSVs (needs the `bench` group: matplotlib).

    python packages/kvprune/benchmarks/plot_quality.py

- ``results/quality_cpu.csv`` (+ ``results/quality_kvpress_cpu.csv`` when present) ->
  ``docs/benchmarks/kvprune.png``: quality versus kept fraction, one point per method
  (averaged over documents / needle depths and contexts);
- ``results/decode_kernel_h100.csv`` -> ``docs/benchmarks/kvprune-decode.png``: decode-attention
  speed-up over full-cache SDPA per context, CUDA-graph timing;
- ``results/quality_ppl_wide_cpu.csv`` -> ``docs/benchmarks/kvprune-ppl-wide.png``: pooled
  perplexity change against freed fraction over 8 documents.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CSVS = [RESULTS / "quality_cpu.csv", RESULTS / "quality_kvpress_cpu.csv"]
DECODE = RESULTS / "decode_kernel_h100.csv"
DOCS = HERE.parents[2] / "docs" / "benchmarks"
TITLES = {
    "ppl": "(a) perplexity change vs full cache, % (mean of 2 docs)",
    "needle": "(b) needle retrieval rate (10 prompts)",
    "agree": "(c) greedy prefix agreement with full cache",
}


def plot_quality(plt) -> None:
    rows = [r for path in CSVS if path.exists() for r in csv.DictReader(path.open())]
    # perplexity relative to the uncompressed run of the same document (documents differ 3x)
    ref = {
        r["doc"]: float(r["value"])
        for r in rows
        if r["bench"] == "ppl" and r["method"] in ("full", "kvpress_none")
    }
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, bench in zip(axes, TITLES, strict=True):
        points = defaultdict(list)
        for r in rows:
            if r["bench"] == bench and r["method"] != "kvpress_none":
                frac = float(r["kept_fraction"])
                if r.get("compression_ratio") and r["method"].startswith("kvpress_adakv"):
                    frac = 1.0 - float(r["compression_ratio"])  # nominal: AdaKV masks, frees none
                value = float(r["value"])
                if bench == "ppl":
                    value = 100.0 * (value / ref[r["doc"]] - 1.0)
                points[r["method"]].append((frac, value))
        for method, pts in sorted(points.items()):
            # average repeated measurements (documents, depths, contexts) per method
            frac = sum(p[0] for p in pts) / len(pts)
            val = sum(p[1] for p in pts) / len(pts)
            if method.startswith("fastgen") and "_w" in method:  # short profiling window
                marker, color = "P", "C1"
            elif method.startswith("fastgen"):
                marker, color = "*", "C3"
            elif method == "full":
                marker, color = "s", "k"
            elif method.startswith("kvpress"):
                marker, color = "^", "C0"
            else:
                marker, color = "o", "C2"
            ax.scatter([frac], [val], marker=marker, s=80, color=color)
            label = method.replace("kvpress_", "kvp:").replace("expected_attention", "expattn")
            ax.annotate(label, (frac, val), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("kept fraction of prompt KV entries")
        ax.set_title(TITLES[bench], fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(
        "kvprune on SmolLM2-135M-Instruct (CPU, measured): red * FastGen, orange + FastGen "
        "profiling the last 32/128 rows, green o kvprune baselines, blue ^ kvpress 0.5.5 "
        "presses, black full cache",
        fontsize=10,
    )
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS / "kvprune.png", dpi=110)
    print(f"wrote {DOCS / 'kvprune.png'}")


def plot_decode(plt) -> None:
    if not DECODE.exists():
        return
    times = defaultdict(dict)  # the fourth session's final run (call 6), queued CUDA-graph replays
    before = defaultdict(dict)  # the third session's shipped default, its graph mode
    for r in csv.DictReader(DECODE.open()):  # rows are appended: the latest run wins
        if r["bench"] != "decode_attention" or r["dtype"] != "float16":
            continue
        key = (int(r["batch"]), int(r["context"]))
        if r.get("session_call", "").endswith("call 6") and r["mode"] == "graph_queued":
            times[key][r["method"]] = float(r["ms"])
        elif not r.get("session_call") and r["mode"] == "graph":
            before[key][r["method"]] = float(r["ms"])
    labels = {
        "ours_half": "ours_half (default: PDL merge, tiles by batch)",
        "ours_half_nopdl": "ours_half, merge without PDL",
        "ours_half_w": "ours_half + weights",
        "sdpa_half": "sdpa_half (dense n/2)",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, b in zip(axes, (1, 4), strict=True):
        ctx = sorted(n for bb, n in times if bb == b)
        for method, style in (
            ("ours_half", "o-"),
            ("ours_half_nopdl", "s--"),
            ("ours_half_w", "^:"),
            ("sdpa_half", "x-."),
        ):
            ys = [times[(b, n)]["sdpa_full"] / times[(b, n)][method] for n in ctx]
            ax.plot(ctx, ys, style, label=labels[method])
        old = [n for n in ctx if "ours_half_nopdl" in before.get((b, n), {})]
        ys = [before[(b, n)]["sdpa_full"] / before[(b, n)]["ours_half_nopdl"] for n in old]
        ax.plot(old, ys, ".:", color="0.5", label="third session's default (its own run)")
        ax.axhline(1.6, color="r", lw=0.8, label="target 1.6x")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context n (each KV head keeps 25-75% of n, mean 50%)")
        ax.set_title(f"batch {b}: speed-up over full-cache SDPA (CUDA graph)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sdpa_full time / method time")
    axes[1].legend(fontsize=8)
    fig.suptitle("Decode attention, Llama-3-8B shapes, fp16, H100 (measured)", fontsize=10)
    fig.tight_layout()
    fig.savefig(DOCS / "kvprune-decode.png", dpi=110)
    print(f"wrote {DOCS / 'kvprune-decode.png'}")


def plot_ppl_wide(plt) -> None:
    """Pooled perplexity change against freed fraction, 8 documents (quality_ppl_wide_cpu.csv)."""
    path = RESULTS / "quality_ppl_wide_cpu.csv"
    if not path.exists():
        return
    nll, tokens, kept = defaultdict(float), defaultdict(int), defaultdict(list)
    for r in csv.DictReader(path.open()):
        nll[r["method"]] += float(r["nll_sum"])
        tokens[r["method"]] += int(r["tokens"])
        kept[r["method"]].append(float(r["kept_fraction"]))
    full = math.exp(nll["full"] / tokens["full"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method in nll:
        if method == "full":
            continue
        freed = 1 - sum(kept[method]) / len(kept[method])
        change = (math.exp(nll[method] / tokens[method]) / full - 1) * 100
        fast = method.startswith("fastgen")
        ax.plot(freed * 100, change, "o" if fast else "s", color="C0" if fast else "C1")
        ax.annotate(method, (freed * 100, change), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")  # fmt: skip
    ax.axhline(2, color="r", lw=0.8, label="goal: within 2%")
    ax.axvline(40, color="k", lw=0.5, ls=":", label="40% freed")
    ax.set_xlabel("KV entries freed after the prompt (%, mean over documents)")
    ax.set_ylabel("pooled perplexity change vs full cache (%)")
    ax.set_title("SmolLM2-135M, 8 documents x 64 tokens, CPU (measured)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "kvprune-ppl-wide.png", dpi=110)
    print(f"wrote {DOCS / 'kvprune-ppl-wide.png'}")


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_quality(plt)
    plot_decode(plt)
    plot_ppl_wide(plt)


if __name__ == "__main__":
    main()
