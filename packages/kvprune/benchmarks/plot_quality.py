"""Plot and tabulate the quality benchmark: needle retrieval and perplexity per method.

    python packages/kvprune/benchmarks/plot_quality.py results/quality_smollm2_cpu.csv \\
        results/quality_smollm2_kvpress_cpu.csv results/ppl_smollm2_cpu.csv \\
        results/ppl_smollm2_kvpress_cpu.csv --title SmolLM2-135M \\
        --png docs/benchmarks/kvprune-quality-smollm2.png \\
        --summary-csv results/quality_summary_smollm2.csv

Prints two markdown tables: needles found / cases per method, one column per (haystack
length, kept fraction), with the best kvprune policy and the best kvpress press of each column;
and each method's perplexity pooled over the documents (sum of NLL / scored tokens) relative
to the full cache. Draws the needle counts (one panel per haystack length) and the perplexity
deltas as bars.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict

FULL = ("full", "kvpress_none")


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            rows += list(csv.DictReader(f))
    return rows


def frac_of(r) -> str:
    if r["method"] in FULL:
        return "1.0"
    return f"{float(r['target_kept']):.1f}" if r["target_kept"] else "T=0.95"


def summarize(rows):
    """``needle[(ctx, frac, method)] = [found, cases]``, ``ppl[(frac, method)]``, mean kept."""
    needle: dict = defaultdict(lambda: [0, 0])
    nll: dict = defaultdict(lambda: [0.0, 0])
    kept: dict = defaultdict(list)
    for r in rows:
        frac = frac_of(r)
        kept[(frac, r["method"])].append(float(r["kept_fraction"]))
        if r["bench"] == "needle":
            cell = needle[(int(r["ctx"]), frac, r["method"])]
            cell[0] += int(r["success"])
            cell[1] += 1
        else:
            nll[(frac, r["method"])][0] += float(r["nll"])
            nll[(frac, r["method"])][1] += int(r["tokens"])
    ppl = {k: math.exp(s / n) for k, (s, n) in nll.items() if n}
    return needle, ppl, {k: sum(v) / len(v) for k, v in kept.items()}


def needle_table(needle) -> list[str]:
    cols = sorted({(c, f) for c, f, _ in needle if f not in ("1.0", "T=0.95")})
    cols = sorted(cols, key=lambda cf: (cf[0], -float(cf[1])))
    methods = sorted(
        {m for _, f, m in needle if f != "T=0.95"}, key=lambda m: (m.startswith("kvpress"), m)
    )
    head = "| method | " + " | ".join(f"{c // 1024}k, {float(f):.0%} kept" for c, f in cols)
    lines = [head + " |", "| --- " * (len(cols) + 1) + "|"]
    for m in methods:
        cells = []
        for c, f in cols:
            frac = "1.0" if m in FULL else f
            v = needle.get((c, frac, m))
            cells.append(f"{v[0]}/{v[1]}" if v else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for label, pick in (
        ("best kvprune", lambda m: not m.startswith("kvpress")),
        ("best kvpress", lambda m: m.startswith("kvpress")),
    ):
        cells = []
        for c, f in cols:
            cand = [
                (v[0], m) for (cc, ff, m), v in needle.items() if cc == c and ff == f and pick(m)
            ]
            if not cand:
                cells.append("")
                continue
            top = max(n for n, _ in cand)
            names = sorted(m for n, m in cand if n == top)
            total = needle[(c, f, names[0])][1]
            cells.append(f"{top}/{total} ({', '.join(names)})")
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    for (c, f, m), v in sorted(needle.items()):
        if f == "T=0.95":  # a threshold, not a fraction: its own line
            lines.append(f"\n{m} ({c // 1024}k, T=0.95): {v[0]}/{v[1]}")
    return lines


def summary_rows(needle, ppl, kept, full_ppl) -> list[dict]:
    """One row per (method, kept fraction): needles found per haystack length, perplexity and
    its change against the full cache: the table that answers "which policy", as data."""
    keys = {(f, m) for _, f, m in needle} | set(ppl)
    contexts = sorted({c for c, _, _ in needle})
    rows = []
    for f, m in sorted(keys, key=lambda k: (k[1].startswith("kvpress"), k[1], k[0])):
        row: dict = {
            "method": m,
            "peer": "kvpress" if m.startswith("kvpress") else "kvprune",
            "target_kept": f,
            "kept_fraction": round(kept[(f, m)], 4) if (f, m) in kept else "",
        }
        for c in contexts:
            v = needle.get((c, f, m))
            row[f"needles_{c // 1024}k"] = v[0] if v else ""
            row[f"cases_{c // 1024}k"] = v[1] if v else ""
        p = ppl.get((f, m))
        row["perplexity"] = round(p, 4) if p else ""
        row["ppl_vs_full"] = round(p / full_ppl - 1, 4) if p and full_ppl else ""
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--title", default="")
    ap.add_argument("--png", default=None)
    ap.add_argument("--summary-csv", default=None, help="write the summary table as one CSV")
    args = ap.parse_args(argv)
    needle, ppl, kept = summarize(load(args.csv))
    if needle:
        print("\n".join(needle_table(needle)))
    full_ppl = ppl.get(("1.0", "full")) or ppl.get(("1.0", "kvpress_none"))
    if ppl:
        print("\n| kept (target) | method | kept (measured) | perplexity | vs full |")
        print("| --- | --- | --- | --- | --- |")
        for k in sorted(ppl, key=lambda k: (k[0], k[1].startswith("kvpress"), ppl[k])):
            rel = f"{ppl[k] / full_ppl - 1:+.1%}" if full_ppl else ""
            print(f"| {k[0]} | {k[1]} | {kept[k]:.3f} | {ppl[k]:.3f} | {rel} |")
    if args.summary_csv:
        rows = summary_rows(needle, ppl, kept, full_ppl)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.summary_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.summary_csv}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        contexts = sorted({c for c, _, _ in needle})
        panels = [
            (
                {(f, m): v[0] / v[1] for (c, f, m), v in needle.items() if c == ctx and v[1]},
                f"needles found, {ctx // 1024}k haystack "
                f"({max(v[1] for (c, _, _), v in needle.items() if c == ctx)} cases)",
            )
            for ctx in contexts
        ]
        if ppl and full_ppl:
            panels.append(({k: ppl[k] / full_ppl - 1 for k in ppl}, "perplexity vs full"))
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
        for ax, (data, label) in zip(axes[0], panels, strict=True):
            names = sorted({k[1] for k in data}, key=lambda m: (m.startswith("kvpress"), m))
            fracs = sorted({k[0] for k in data})
            width = 0.8 / max(1, len(fracs))
            for j, frac in enumerate(fracs):
                ys = [data.get((frac, m), float("nan")) for m in names]
                xs = [i + j * width for i in range(len(names))]
                ax.bar(xs, ys, width, label=f"kept {frac}")
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.set_title(label, fontsize=9)
            if label.startswith("needles"):
                ax.set_ylim(0, 1.3)  # room for the legend above the bars
            ax.legend(fontsize=7, ncol=len(fracs), loc="upper left")
        fig.suptitle(args.title)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
