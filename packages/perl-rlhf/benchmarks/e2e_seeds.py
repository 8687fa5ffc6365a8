"""The slow SmolLM2 end-to-end test's reward + RL stages at another seed (torch's and the RL
sampler's): ``python benchmarks/e2e_seeds.py SEED [STEPS]`` prints the held-out rule reward before and
after RL, the rise in standard errors, the largest KL and the training-sample rule reward."""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from perl_rlhf import (
    LoraSpec,
    PerlModel,
    PolicyConfig,
    PolicyTrainer,
    RewardConfig,
    contains_number,
    load_base,
    train_reward_model,
)
from test_smollm2 import DATA, EVAL_SAMPLES, RL_SETTINGS  # pyright: ignore[reportMissingImports]  (tests/ on sys.path above)

from tensor_utils_dev.models import smollm2_dir


def main(seed: int, steps: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    base, tok = load_base(smollm2_dir())
    model = PerlModel(base, lora=LoraSpec(rank=8), tokenizer=tok)
    rm = train_reward_model(
        model,
        tok,
        DATA / "pairs_train.jsonl",
        eval_data=DATA / "pairs_test.jsonl",
        config=RewardConfig(lr=1e-3, epochs=3, batch_size=8),
        progress=False,
    )
    print("rm", rm.metrics, flush=True)
    tr = PolicyTrainer(
        model,
        tok,
        DATA / "questions_rl.jsonl",
        config=PolicyConfig(**{**RL_SETTINGS, "steps": steps}, seed=seed),
        true_reward_fn=contains_number,
    )
    ho = DATA / "questions_test.jsonl"
    b = tr.evaluate_rule(contains_number, prompts=ho, samples=EVAL_SAMPLES)
    h = tr.train(progress=False).history
    a = tr.evaluate_rule(contains_number, prompts=ho, samples=EVAL_SAMPLES)
    se = math.hypot(b["stderr"], a["stderr"])
    print(
        f"seed {seed}, {steps} steps: before {b['mean']:.3f}+-{b['stderr']:.3f} after {a['mean']:.3f}+-{a['stderr']:.3f} rise {(a['mean'] - b['mean']) / se:.1f} SE; max KL {max(abs(r['kl']) for r in h):.2f}; train {[round(r['true_reward'], 2) for r in h]}",
        flush=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else RL_SETTINGS["steps"])
