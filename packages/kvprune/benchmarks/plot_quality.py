"""Plot and tabulate the quality benchmark: needle retrieval and perplexity per method.

    python packages/kvprune/benchmarks/plot_quality.py results/quality_smollm2_cpu.csv \\
        results/quality_smollm2_kvpress_cpu.csv --title SmolLM2-135M --png docs/benchmarks/kvprune-quality-smollm2.png

Prints, per kept fraction, each method's needles found / cases and its pooled perplexity
relative to the full cache (sum of NLL over documents / tokens), and draws both as bars.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            rows += list(csv.DictReader(f))
    return rows


def summarize(rows):
    needle = defaultdict(lambda: [0, 0])
    nll = defaultdict(lambda: [0.0, 0])
    kept = defaultdict(list)
    for r in rows:
        frac = r["target_kept"] or "T=0.95"
        if r["method"] in ("full", "kvprune_none"):
            frac = "1.0"
        key = (frac, r["method"])
        kept[key].append(float(r["kept_fraction"]))
        if r["bench"] == "needle":
            needle[key][0] += int(r["success"])
            needle[key][1] += 1
        else:
            nll[key][0] += float(r["nll"])
            nll[key][1] += int(r["tokens"])
    ppl = {k: math.exp(s / n) for k, (s, n) in nll.items() if n}
    return needle, ppl, {k: sum(v) / len(v) for k, v in kept.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--title", default="")
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)
    needle, ppl, kept = summarize(load(args.csv))
    full_ppl = ppl.get(("1.0", "full")) or ppl.get(("1.0", "kvpress_none"))
    keys = sorted(set(needle) | set(ppl), key=lambda k: (k[0], k[1]))
    print("| kept (target) | method | kept (measured) | needles | perplexity vs full |")
    print("| --- | --- | --- | --- | --- |")
    for k in keys:
        n = needle.get(k)
        found = f"{n[0]}/{n[1]}" if n else ""
        rel = f"{ppl[k] / full_ppl - 1:+.1%}" if k in ppl and full_ppl else ""
        print(f"| {k[0]} | {k[1]} | {kept[k]:.3f} | {found} | {rel} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
        for ax, data, label in (
            (axes[0], {k: v[0] / v[1] for k, v in needle.items() if v[1]}, "needles found"),
            (
                axes[1],
                {k: ppl[k] / full_ppl - 1 for k in ppl} if full_ppl else {},
                "perplexity vs full",
            ),
        ):
            names = sorted({k[1] for k in data})
            fracs = sorted({k[0] for k in data})
            width = 0.8 / max(1, len(fracs))
            for j, frac in enumerate(fracs):
                ys = [data.get((frac, m), float("nan")) for m in names]
                ax.bar([i + j * width for i in range(len(names))], ys, width, label=f"kept {frac}")
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
        fig.suptitle(args.title)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
