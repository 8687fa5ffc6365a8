"""Plot the CPU decode cost (``bench_decode_cpu.py``'s CSV): time per token of each method
relative to the full cache (``DynamicCache``), one group of bars per context, one panel per
measurement mode (``generate`` calls interleaved per round; single steps interleaved per token).

    python packages/kvprune/benchmarks/plot_decode_cpu.py \\
        packages/kvprune/benchmarks/results/decode_cpu.csv --png docs/benchmarks/kvprune-decode-cpu.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

LABELS = {
    "full": "DynamicCache (full)",
    "kvprune_full": "Full()",
    "fastgen_t0.95": "FastGen(recovery=0.95)",
    "adaptive_fastgen_0.5": "AdaptiveFastGen(0.5)",
    "hybrid_fastgen_0.5": "HybridFastGen(0.5)",
    "h2o_0.5": "H2O(0.5)",
    "streamingllm_0.5": "StreamingLLM(0.5)",
    "tova_0.5": "TOVA(0.5)",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--png", required=True)
    args = ap.parse_args(argv)
    try:
        with open(args.csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print(f"plot_decode_cpu: cannot read {args.csv}: {e.strerror}", file=sys.stderr)
        return 1
    latest: dict[tuple[str, int, str], dict] = {}  # the last row of each (mode, context, method)
    for row in rows:
        mode = row.get("mode") or "generate"
        latest[(mode, int(row["context"]), row["method"])] = row
    modes = [m for m in ("generate", "steps") if any(k[0] == m for k in latest)]
    if not modes:
        print(f"plot_decode_cpu: no decode rows in {args.csv}", file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 3.8), squeeze=False)
    titles = {
        "generate": "generate() calls, rotated per round",
        "steps": "steps, rotated per token",
    }
    for ax, mode in zip(axes[0], modes, strict=True):
        contexts = sorted({c for md, c, _ in latest if md == mode})
        methods = [m for m in LABELS if any((mode, c, m) in latest for c in contexts)]
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            xs, ys = [], []
            for j, c in enumerate(contexts):
                if (mode, c, m) in latest:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(float(latest[(mode, c, m)]["vs_full"]))
            bars = ax.bar(xs, ys, width, label=LABELS[m])
            ax.bar_label(bars, fmt="%.2f", fontsize=5, padding=1)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(contexts)), [f"{c // 1024}k context" for c in contexts])
        ax.set_ylabel("time per token / DynamicCache")
        ax.set_title(titles[mode], fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=6)
    fig.suptitle("SmolLM2-135M decode on a 2-core CPU (one thread); lower is faster", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
