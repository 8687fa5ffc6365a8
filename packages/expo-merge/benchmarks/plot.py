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
    last = max((r["timestamp"] for r in e2e), default=None)
    runs = [r for r in e2e if r["timestamp"][:13] == (last or "")[:13]]
    tools = ["io_floor", "expo_merge", "mergekit"]
    best = {t: min((float(r["seconds"]) for r in runs if r["tool"] == t), default=0) for t in tools}
    mem = {
        t: max((float(r["anon_peak_bytes"] or 0) for r in runs if r["tool"] == t), default=0)
        for t in tools
    }
    bars = left.bar(tools, [best[t] for t in tools], color=["grey", "tab:blue", "tab:orange"])
    for bar, t in zip(bars, tools, strict=True):
        label = f"{best[t]:.1f} s" + (f"\n{mem[t] / 1e9:.2f} GB anon" if mem[t] else "")
        left.annotate(
            label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
        )
    left.set_ylabel("seconds (best of runs)")
    left.set_title("1.1B bf16 pair, 2-core CPU, warm page cache")
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
