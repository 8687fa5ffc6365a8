"""GPU benchmark at 1B scale: a Llama-3.2-1B-shaped model (random weights, bfloat16), sequence
1024. Peak GPU memory (``max_memory_allocated``) and median step time of reward-model training
and of one RL iteration (rollout + update), full fine-tuning vs LoRA ranks 1 / 8 / 32, and TRL's
RewardTrainer / RLOOTrainer when ``trl`` imports (skipped with a message otherwise). One process
per configuration, rounds interleaved. Needs no package registry: run with PYTHONPATH over the
src folders (and a folder holding the carried TRL wheel's contents, if any):

    PYTHONPATH=shared/tensor-utils/src:shared/tensor-utils-dev/src:packages/perl-rlhf/src \
      python packages/perl-rlhf/benchmarks/bench_gpu.py --out packages/perl-rlhf/benchmarks/results/gpu_h100.csv

TRL's configurations get the same random model (the causal LM as policy, a sequence-classifier
copy as RLOO's reward model, as TRL requires) and a word-level tokenizer built in code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import add_args, child, run_configs

KINDS = [
    "reward_full", "reward_lora1", "reward_lora8", "reward_lora32",
    "rl_reinforce_full", "rl_reinforce_lora1", "rl_reinforce_lora8", "rl_reinforce_lora32",
    "rl_rloo_full", "rl_rloo_lora8",
]  # fmt: skip
TRL_KINDS = ["trl_reward", "trl_rloo"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_args(p)
    p.set_defaults(seq=1024, batch=8, new_tokens=128, rounds=2, steps=3, timeout=600)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.csv"))
    p.add_argument("--model", default="llama-1b", help="llama-1b (random) or smollm2")
    args = p.parse_args()
    args.device, args.dtype = "cuda", "bfloat16"
    if args.child:
        args.kind = args.child
        print(json.dumps(child(args)), flush=True)
        return
    from tensor_utils_dev.bench import environment_tags, write_csv

    kinds = args.only.split(",") if args.only else list(KINDS)
    if not args.only:
        if importlib.util.find_spec("trl") is None:
            print("trl does not import: TRL configurations skipped", flush=True)
        else:
            kinds += TRL_KINDS
    rows = run_configs(args, kinds)
    settings = {"model": args.model, "dtype": "bfloat16", "batch": args.batch, "seq": args.seq,
                "new_tokens": args.new_tokens, "targets": args.targets}  # fmt: skip
    tags = environment_tags(packages=("peft", "trl", "perl-rlhf"))
    write_csv(args.out, [{**settings, **r} for r in rows], tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
