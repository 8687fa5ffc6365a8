"""CPU benchmark on the real SmolLM2-135M-Instruct (float32): peak resident memory outside the
page cache and median step time, side by side, one process per configuration, rounds
interleaved:

  reward-model training: full fine-tuning vs LoRA ranks 1 / 8 / 32 (attention targets, PERL)
  one RL iteration (rollout + update): full (separate policy/reference/value/reward weights) vs
  LoRA rank 8 on one base, REINFORCE with a value baseline and RLOO
  TRL's RewardTrainer and RLOOTrainer (LoRA rank 8), from a separate TRL install
  (``--trl-site``, made by ``--install-trl``; TRL is never a dependency of this package;
  without it the TRL configurations are skipped with a message)

With no arguments: a quick check at tiny sizes (batch 2, 16 tokens, one timed step) of reward
training full vs LoRA 8 and a LoRA RLOO iteration (what `python tools/bench.py perl-rlhf`
runs). The page's run:

    uv run --package perl-rlhf --group bench python packages/perl-rlhf/benchmarks/bench_cpu.py \
        --install-trl --only all --batch 2 --seq 32 --new-tokens 8 --steps 1 --rounds 2 \
        --out packages/perl-rlhf/benchmarks/results/cpu.csv
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import add_args, child, run_configs

KINDS = [
    "reward_full", "reward_lora1", "reward_lora8", "reward_lora32", "trl_reward",
    "rl_reinforce_full", "rl_reinforce_lora8", "rl_rloo_full", "rl_rloo_lora8", "trl_rloo",
]  # fmt: skip
QUICK = ["reward_full", "reward_lora8", "rl_rloo_lora8"]
TRL_VERSION = "1.16.0"


def install_trl(site: Path) -> None:
    """TRL alone (no dependencies: torch, transformers, peft, accelerate, datasets come from
    this environment, so both sides run the same library versions) into its own folder."""
    if (site / "trl").exists():
        return
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         f"trl=={TRL_VERSION}"],
        check=True,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_args(p)
    p.add_argument("--out", default=None, help="CSV (default: results_dir()/cpu.csv)")
    p.add_argument("--trl-site", default="/tmp/perl-rlhf-trl-site")
    p.add_argument("--install-trl", action="store_true")
    args = p.parse_args()
    args.model, args.device, args.dtype = "smollm2", "cpu", "float32"
    if args.child:
        args.kind = args.child
        print(json.dumps(child(args)), flush=True)
        return
    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

    out = Path(args.out) if args.out else results_dir(__file__) / "cpu.csv"
    site = Path(args.trl_site)
    if args.install_trl:
        install_trl(site)
    kinds = KINDS if args.only == "all" else args.only.split(",") if args.only else QUICK
    if not (site / "trl").exists() and importlib.util.find_spec("trl") is None:
        skipped = [k for k in kinds if k.startswith("trl_")]
        if skipped:
            print(f"skipping {', '.join(skipped)}: TRL is not installed (pass --install-trl)")
        kinds = [k for k in kinds if k not in skipped]
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    rows = run_configs(args, kinds, extra_env=env)
    settings = {"model": "SmolLM2-135M-Instruct", "dtype": "float32", "batch": args.batch,
                "seq": args.seq, "new_tokens": args.new_tokens, "targets": args.targets,
                "threads": args.threads}  # fmt: skip
    tags = environment_tags(packages=("peft", "perl-rlhf"))
    tags["trl"] = TRL_VERSION if (site / "trl").exists() else ""
    write_csv(out, [{**settings, **r} for r in rows], tags=tags)
    print(f"wrote {out}")
    if any(r["status"] != "ok" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
