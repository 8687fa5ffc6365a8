"""The slow SmolLM2 end-to-end test's recipe (``tests/smollm2_e2e.py``) at several seeds:
``python benchmarks/e2e_seeds.py [--steps N] [--reward-cache DIR] [--out DIR] SEED...`` prints,
per seed, the reward model's held-out accuracy, the held-out rule reward before and after RL,
the rise in standard errors, the largest KL and the training-sample rule reward; ``--csv`` adds
one row per seed to a CSV. ``--reward-cache`` keeps each seed's trained reward adapter for
later runs; ``--set KEY=VALUE`` overrides an RL setting."""

import argparse
import ast
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from smollm2_e2e import (  # pyright: ignore[reportMissingImports]  (tests/ on sys.path above)
    MAX_KL,
    MIN_RISE,
    RULE,
    run,
    versions,
    write_outputs,
)

from tensor_utils_dev.models import smollm2_dir


def main() -> None:
    ap = argparse.ArgumentParser(description="the end-to-end recipe at several seeds")
    ap.add_argument("seeds", nargs="+", type=int)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reward-cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="per-seed log, CSV and plot here")
    ap.add_argument("--csv", type=Path, default=None, help="append one row per seed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    overrides = {}
    for kv in args.set:
        key, value = kv.split("=", 1)
        overrides[key] = ast.literal_eval(value)
    model_dir = smollm2_dir()
    for seed in args.seeds:
        cache = args.reward_cache / f"seed{seed}" if args.reward_cache else None
        res = run(model_dir, seed, args.steps, reward_dir=cache, **overrides)
        if args.out:
            write_outputs(res, args.out / f"seed{seed}")
        if args.csv:
            append_row(args.csv, res, " ".join(sys.argv[1:]))


def append_row(path: Path, res: dict, argv: str) -> None:
    s = res["settings"]
    row = {
        "seed": res["seed"],
        "rule": repr(RULE),
        "rm_accuracy": round(res["reward_model"]["accuracy"], 3),
        "rm_auc": round(res["reward_model"]["auc"], 3),
        "before_mean": round(res["before"]["mean"], 3),
        "before_stderr": round(res["before"]["stderr"], 3),
        "after_mean": round(res["after"]["mean"], 3),
        "after_stderr": round(res["after"]["stderr"], 3),
        "rise_in_stderr": round(res["rise_in_stderr"], 1),
        "max_abs_kl": round(res["max_abs_kl"], 2),
        "passes": res["rise_in_stderr"] > MIN_RISE and res["max_abs_kl"] < MAX_KL,
        "eval_samples": int(res["after"]["n"]),
        **{k: s[k] for k in ("algorithm", "steps", "batch_size", "samples_per_prompt")},
        **{k: s[k] for k in ("max_new_tokens", "lr", "beta", "temperature")},
        "minutes": round(res["seconds"] / 60, 1),
        "reward_model": "trained" if res["reward_model_trained"] else "loaded",
        **versions(),
        "command": f"python packages/perl-rlhf/benchmarks/e2e_seeds.py {argv}",
    }
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    main()
