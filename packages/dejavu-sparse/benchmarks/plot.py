"""Plots for docs/benchmarks/dejavu-sparse.md from the CSVs in results/.

python benchmarks/plot.py
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[2] / "docs" / "benchmarks"


def read(name: str) -> list[dict]:
    path = HERE / "results" / name
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def quality(plt) -> None:
    rows = [r for r in read("quality_cpu.csv") if r["bench"] == "ppl"]
    if not rows:
        return
    dense = next(float(r["ppl"]) for r in rows if r["mode"] == "dense")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    series = defaultdict(list)
    for r in rows:
        if r["mode"] != "dense":
            series[r["mode"]].append(
                (float(r["sparsity"]), float(r["ppl"]), float(r["achieved_layer"]))
            )
    for mode, pts in sorted(series.items()):
        pts = [(0.0, dense, 0.0), *sorted(pts)]
        a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=mode)
        b.plot([p[2] for p in pts], [p[1] for p in pts], "o-", label=mode)
    for ax in (a, b):
        ax.axhline(dense * 1.05, color="gray", ls="--", lw=0.8, label="dense +5%")
        ax.set_yscale("log")
        ax.set_ylabel("perplexity (held-out text)")
        ax.grid(alpha=0.3)
    a.set_xlabel("requested sparsity")
    b.set_xlabel("achieved: fraction of layer weight reads skipped")
    a.legend()
    fig.suptitle("SmolLM2-135M-Instruct, float32, CPU")
    fig.tight_layout()
    fig.savefig(DOCS / "dejavu-sparse-quality.png", dpi=110)

    rec = [r for r in read("quality_cpu.csv") if r["bench"] == "recall"]
    if rec:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for s in sorted({r["sparsity"] for r in rec}):
            pts = sorted(
                (int(r["layer"]), float(r["mlp_recall"])) for r in rec if r["sparsity"] == s
            )
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "o-",
                ms=3,
                label=f"MLP, {float(s):.0%} skipped",
            )
            base = float(next(r["mlp_random"] for r in rec if r["sparsity"] == s))
            ax.axhline(base, ls=":", lw=0.8, color=ax.lines[-1].get_color())
        ax.set_xlabel("layer")
        ax.set_ylabel("recall of oracle top-K")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Deja Vu MLP predictor recall (dotted: random choice)")
        fig.tight_layout()
        fig.savefig(DOCS / "dejavu-sparse-recall.png", dpi=110)


def decode(plt) -> None:
    rows = [r for r in read("decode_cpu.csv") if r["bench"] == "block"]
    if len({r["sparsity"] for r in rows}) < 2:  # a curve needs several sparsities
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, block in zip(axes, ("mlp", "layer"), strict=True):
        for batch in ("1", "4"):
            for mode in ("dejavu", "teal", "cats"):
                pts = sorted((float(r["sparsity"]), float(r[f"{block}_speedup"])) for r in rows
                             if r["batch"] == batch and r["mode"] == mode)  # fmt: skip
                ls = "-" if batch == "1" else ":"
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    "o" + ls,
                    label=f"{mode}, batch {batch}",
                )
        goal = 1.8 if block == "mlp" else 1.5
        ax.axhline(goal, color="red", lw=0.8, ls="--", label=f"goal {goal}x (batch 1, 50%)")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"{'MLP block' if block == 'mlp' else 'whole decoder layer'}")
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speed-up over dense (same process)")
    axes[1].legend(fontsize=7)
    fig.suptitle("CPU decode step, Llama-3-8B layer shapes, float32 (2-core shared machine)")
    fig.tight_layout()
    fig.savefig(DOCS / "dejavu-sparse-decode-cpu.png", dpi=110)


def blocks(plt) -> None:
    """TEAL's block option: MLP-block speed at Llama-3-8B shapes (``probe_blocks_cpu.py``)
    against perplexity on SmolLM2 (``bench_quality.py`` rows in ``blocks_cpu.csv``)."""
    if not (HERE / "results" / "blocks_cpu.csv").exists():
        return
    rows = read("blocks_cpu.csv")
    mlp = [r for r in rows if r["bench"] == "mlp"]
    ppl = [r for r in rows if r["bench"] == "ppl" and r["mode"] != "dense"]
    if not mlp or not ppl:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in (("contig", "contiguous slice (bound)"), ("block64", "blocks of 64"),
                        ("block16", "blocks of 16"), ("block8", "blocks of 8"),
                        ("inplace", "fine-grained, in place (shipped TEAL)"),
                        ("runs", "fine-grained, one addmm per run")):  # fmt: skip
        pts = sorted((1 - float(r["density"]), float(r[f"{name}_speedup"])) for r in mlp)
        a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    a.axhline(1.8, color="red", lw=0.8, ls="--", label="goal 1.8x (50%)")
    a.axhline(1.0, color="gray", lw=0.8)
    a.set_xlabel("fraction of input channels skipped")
    a.set_ylabel("MLP block speed-up over dense")
    a.set_title("Llama-3-8B MLP, batch 1, float32 (2-core CPU)")
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    for mode in ("teal_uniform", "teal_uniform_b8", "teal_uniform_b16"):
        pts = sorted((float(r["achieved_layer"]), float(r["ppl_ratio"])) for r in ppl
                     if r["mode"] == mode)  # fmt: skip
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=mode)
    b.axhline(1.05, color="red", lw=0.8, ls="--", label="dense + 5%")
    b.set_yscale("log")
    b.set_xlabel("fraction of weight reads skipped (achieved)")
    b.set_ylabel("perplexity / dense")
    b.set_title("SmolLM2-135M-Instruct, 1,024 held-out tokens")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "dejavu-sparse-blocks.png", dpi=110)


def decode_gpu(plt) -> None:
    """The H100 CUDA-graph results (``bench_decode_gpu.py``), when present."""
    for path in sorted((HERE / "results").glob("decode_gpu*.csv")):
        rows = read(path.name)
        if not rows:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
        for ax, block in zip(axes, ("mlp", "attn", "layer"), strict=True):
            for batch in sorted({r["batch"] for r in rows}, key=int):
                for mode in ("dejavu", "teal", "cats"):
                    pts = sorted((float(r["sparsity"]), float(r["speedup"])) for r in rows
                                 if r["batch"] == batch and r["mode"] == mode and r["block"] == block)  # fmt: skip
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3,
                                label=f"{mode}, batch {batch}")  # fmt: skip
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_title(block)
            ax.set_xlabel("sparsity")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("speed-up over dense cuBLAS (CUDA graph)")
        axes[2].legend(fontsize=6)
        fig.suptitle(f"{rows[0].get('device', 'GPU')}, bf16, Llama-3-8B layer shapes")
        fig.tight_layout()
        fig.savefig(DOCS / f"dejavu-sparse-{path.stem.replace('_', '-')}.png", dpi=110)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality(plt)
    decode(plt)
    blocks(plt)
    decode_gpu(plt)


if __name__ == "__main__":
    main()
