"""Plot for docs/benchmarks/perl-rlhf.md from results/cpu.csv (bench_cpu.py).

    python packages/perl-rlhf/benchmarks/plot.py

``perl-rlhf-cpu.png``: per configuration, peak resident memory outside the page cache (split
into the process at start, the model weights and the rest) and the CPU time of one step (median
over rounds), for reward training and one RL iteration.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parents[2] / "docs" / "benchmarks"
GROUPS = {
    "reward training": ["reward_full", "reward_lora1", "reward_lora8", "reward_lora32",
                        "trl_reward"],
    "one RL iteration": ["rl_reinforce_full", "rl_reinforce_lora8", "rl_rloo_full",
                         "rl_rloo_lora8", "trl_rloo"],
}  # fmt: skip
LABELS = {
    "reward_full": "full FT", "reward_lora1": "LoRA r1", "reward_lora8": "LoRA r8",
    "reward_lora32": "LoRA r32", "trl_reward": "TRL RewardTrainer\n(LoRA r8)",
    "rl_reinforce_full": "REINFORCE\nfull", "rl_reinforce_lora8": "REINFORCE\nLoRA r8",
    "rl_rloo_full": "RLOO\nfull", "rl_rloo_lora8": "RLOO\nLoRA r8",
    "trl_rloo": "TRL RLOOTrainer\n(LoRA r8)",
}  # fmt: skip


def medians(path: Path) -> dict[str, dict[str, float]]:
    """Per configuration, the median over rounds of each numeric column."""
    cols: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("status") != "ok":
                continue
            for key in ("peak_anon_mib", "start_anon_mib", "weights_mib", "step_cpu_ms", "step_ms"):
                if row.get(key):
                    cols[row["kind"]][key].append(float(row[key]))
    return {k: {c: statistics.median(v) for c, v in d.items()} for k, d in cols.items()}


def main() -> None:
    m = medians(RESULTS / "cpu.csv")
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for col, (title, kinds) in enumerate(GROUPS.items()):
        kinds = [k for k in kinds if k in m]
        x = range(len(kinds))
        start = [m[k]["start_anon_mib"] for k in kinds]
        weights = [m[k]["weights_mib"] for k in kinds]
        rest = [
            m[k]["peak_anon_mib"] - s - w for k, s, w in zip(kinds, start, weights, strict=True)
        ]
        ax = axes[0][col]
        ax.bar(x, start, color="tab:gray", label="process at start (Python, torch)")
        ax.bar(x, weights, bottom=start, color="tab:blue", label="model weights (all copies)")
        ax.bar(
            x, rest, bottom=[s + w for s, w in zip(start, weights, strict=True)],
            color="tab:orange", label="gradients, optimizer, activations, other",
        )  # fmt: skip
        for i, k in enumerate(kinds):
            ax.text(i, m[k]["peak_anon_mib"], f"{m[k]['peak_anon_mib']:.0f}", ha="center",
                    va="bottom", fontsize=8)  # fmt: skip
        ax.set_xticks(list(x), [LABELS[k] for k in kinds], fontsize=8)
        ax.set_ylabel("peak anonymous RSS (MiB)")
        ax.set_title(f"{title}: peak memory")
        ax.grid(axis="y", alpha=0.3)
        if col == 0:
            ax.legend(fontsize=7, loc="upper right")
        ax = axes[1][col]
        cpu = [m[k]["step_cpu_ms"] / 1e3 for k in kinds]
        ax.bar(x, cpu, color="tab:green")
        for i, v in enumerate(cpu):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [LABELS[k] for k in kinds], fontsize=8)
        ax.set_ylabel("CPU seconds per step (process)")
        ax.set_title(f"{title}: step CPU time")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("SmolLM2-135M-Instruct, float32, 2-core CPU (median over rounds)")
    fig.tight_layout()
    out = DOCS / "perl-rlhf-cpu.png"
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
