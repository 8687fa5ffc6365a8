"""Plot the benchmark CSVs into docs/benchmarks/expo-merge.png (needs the ``bench`` group: matplotlib).

python packages/expo-merge/benchmarks/plot.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
DOCS = HERE.parents[2] / "docs" / "benchmarks"


def rows(name):
    path = HERE / "results" / name
    return list(csv.DictReader(open(path))) if path.exists() else []


def main() -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    e2e = [r for r in rows("e2e_cpu.csv") if r["bench"] == "e2e_cpu" and r.get("tool")]
    last = max((r["timestamp"] for r in e2e), default="")
    runs = [r for r in e2e if r["timestamp"] == last]
    tools = ["io_floor", "expo_merge", "mergekit"]
    colors = {"io_floor": "grey", "expo_merge": "tab:blue", "mergekit": "tab:orange"}
    caches = [c for c in ("warm", "cold") if any(r.get("cache") == c for r in runs)] or [""]
    width = 0.8 / len(tools)
    for ci, cache in enumerate(caches):
        for ti, t in enumerate(tools):
            sel = [r for r in runs if r["tool"] == t and r.get("cache", "") == cache]
            if not sel:
                continue
            best = min(float(r["seconds"]) for r in sel)
            mem = max(float(r["anon_peak_bytes"] or 0) for r in sel)
            x = ci + (ti - 1) * width
            left.bar(x, best, width, color=colors[t], label=t if ci == 0 else None)
            label = f"{best:.1f} s" + (f"\n{mem / 1e9:.2f} GB" if mem else "")
            left.annotate(label, (x, best), ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(caches)), [f"{c} page cache" for c in caches])
    left.set_ylabel("seconds (best of runs); label: peak anon RSS")
    left.set_title("1.1B bf16 pair, 2 shared CPU cores")
    left.legend()
    kernel = [r for r in rows("kernel_h100.csv") if r["dtype"] == "bfloat16"]
    for op in ("copy", "expo_triton", "torch_lerp", "torch_unfused", "expo_reference"):
        pts = sorted((int(r["elements"]), float(r["gb_per_s"])) for r in kernel if r["op"] == op)
        if pts:
            right.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=op)
    right.set_xscale("log")
    right.set_xlabel("elements per tensor (bf16)")
    right.set_ylabel("GB/s (bytes moved / time)")
    right.set_title("H100: fused kernel vs copy, lerp, unfused")
    right.legend()
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS / "expo-merge.png", dpi=110)
    print(f"wrote {DOCS / 'expo-merge.png'}")


if __name__ == "__main__":
    main()
