"""The end-to-end recipe on the real SmolLM2-135M-Instruct (CPU), shared by the slow test
(``test_smollm2.py``) and the seeds benchmark (``benchmarks/e2e_seeds.py``).

Rule: an answer of at most 10 words is preferred (``WordBand(1, 10)``), on prompts "Describe
<topic> in a few words." (``examples/length_rule``). A LoRA reward model learns the rule from
pairs of the model's own answers; LoRA RL (RLOO) on the same base, rewarded by that model only,
must raise the rule's true reward on held-out topics while the KL to the reference stays small.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from perl_rlhf import (
    LoraSpec,
    PerlModel,
    PolicyConfig,
    PolicyTrainer,
    RewardConfig,
    WordBand,
    load_base,
    plot_log,
    train_reward_model,
    write_log,
)

DATA = Path(__file__).parents[1] / "examples" / "length_rule"
RULE = WordBand(1, 10)
REWARD_SETTINGS: dict[str, Any] = dict(lr=1e-3, epochs=3, batch_size=8)
# RLOO, 2 prompts x 8 samples per step: the settings the benchmark page reports.
RL_SETTINGS: dict[str, Any] = dict(
    algorithm="rloo", samples_per_prompt=8, batch_size=2, steps=16,
    max_new_tokens=32, lr=5e-4, temperature=0.7, beta=0.2, whiten_rewards=True,
)  # fmt: skip
EVAL_SAMPLES = 4  # per held-out prompt: 24 x 4 = 96 samples
MIN_RISE = 2.0  # standard errors of the difference
MAX_KL = 5.0  # nats per sequence, at every step


def run(
    model_dir,
    seed: int = 0,
    steps: int | None = None,
    *,
    reward_dir: Path | None = None,
    log=print,
    **overrides,
) -> dict:
    """Train the reward model (or load it from ``reward_dir`` if saved there; it is saved there
    otherwise), then RL for ``steps`` (default ``RL_SETTINGS``), at ``seed`` (torch's generator
    and the RL prompt order). Returns the reward-model metrics, the held-out rule reward before
    and after RL, the rise in standard errors, the largest KL and the per-step history."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    # One thread: on a shared 2-core machine two OpenMP threads wait on each other while other
    # processes hold the cores (an RL step took 146 s with two threads, 26 s with one).
    torch.set_num_threads(1)
    base, tok = load_base(model_dir)
    model = PerlModel(base, roles=("policy", "reward"), lora=LoraSpec(rank=8), tokenizer=tok)
    trained = not (reward_dir is not None and Path(reward_dir).is_dir())
    if reward_dir is not None and not trained:
        rm_metrics = model.load("reward", reward_dir)["metrics"]
    else:
        rm = train_reward_model(
            model, tok, DATA / "pairs_train.jsonl", eval_data=DATA / "pairs_test.jsonl",
            config=RewardConfig(**REWARD_SETTINGS, seed=seed), progress=False,
        )  # fmt: skip
        rm_metrics = rm.metrics
        if reward_dir is not None:
            model.save("reward", reward_dir, extra={"metrics": rm_metrics})
    log(f"seed {seed}: reward model, held-out pairs: {rm_metrics}")
    settings = {**RL_SETTINGS, **overrides, "seed": seed}
    if steps is not None:
        settings["steps"] = steps
    # Reseeded: the RL stage draws the same samples whether the reward model was trained or loaded.
    torch.manual_seed(seed)
    trainer = PolicyTrainer(
        model,
        tok,
        DATA / "prompts_rl.jsonl",
        config=PolicyConfig(**settings),
        true_reward_fn=RULE,
    )
    held_out = DATA / "prompts_rl_test.jsonl"
    seen: dict[str, list[str]] = {"before": [], "after": []}

    def rule_seen(key: str):
        def rule(prompts, responses):
            seen[key].extend(responses)
            return RULE(prompts, responses)

        return rule

    before = trainer.evaluate_rule(rule_seen("before"), prompts=held_out, samples=EVAL_SAMPLES)

    def on_step(r: dict) -> None:
        log(
            f"  step {r['step']}: reward {r['reward']:.3f} rule {r['true_reward']:.2f} "
            f"kl {r['kl']:.3f} length {r['response_length']:.1f} ({r['seconds']:.0f} s)"
        )

    hist = trainer.train(progress=False, on_step=on_step).history
    after = trainer.evaluate_rule(rule_seen("after"), prompts=held_out, samples=EVAL_SAMPLES)
    se = math.hypot(before["stderr"], after["stderr"])
    out = {
        "seed": seed,
        "reward_model": rm_metrics,
        "reward_model_trained": trained,  # False: loaded from reward_dir
        "before": before,
        "after": after,
        "rise_in_stderr": (after["mean"] - before["mean"]) / se if se > 0 else math.inf,
        "max_abs_kl": max(abs(r["kl"]) for r in hist),
        "answers": {k: v[:6] for k, v in seen.items()},  # first held-out prompts' answers
        "history": hist,
        "settings": settings,
        "seconds": time.perf_counter() - t0,
    }
    log(summary_line(out))
    log(f"  held-out answers after RL: {out['answers']['after']}")
    return out


def summary_line(res: dict) -> str:
    b, a, hist = res["before"], res["after"], res["history"]
    return (
        f"seed {res['seed']}, {len(hist)} steps: held-out rule reward {b['mean']:.3f} +- "
        f"{b['stderr']:.3f} -> {a['mean']:.3f} +- {a['stderr']:.3f} (n {int(a['n'])}), rise "
        f"{res['rise_in_stderr']:.1f} standard errors; max KL {res['max_abs_kl']:.2f}; "
        f"training-sample rule reward {[round(r['true_reward'], 2) for r in hist]}; "
        f"{res['seconds'] / 60:.1f} min"
    )


def versions() -> dict:
    import peft
    import transformers

    return {
        "device": f"{platform.machine()} cpu, {torch.get_num_threads()} thread",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def write_outputs(res: dict, out: Path) -> None:
    """Per-step log (JSONL), summary (JSON), per-step CSV and plot of one run in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    hist = res["history"]
    write_log(hist, out / "rl_log.jsonl")
    summary = {k: v for k, v in res.items() if k != "history"}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    fixed = {
        "model": "SmolLM2-135M-Instruct",
        "rule": repr(RULE),
        **{k: v for k, v in res["settings"].items()},
        "rm_accuracy": res["reward_model"]["accuracy"],
        "rm_auc": res["reward_model"]["auc"],
        "before_mean": res["before"]["mean"],
        "before_stderr": res["before"]["stderr"],
        "after_mean": res["after"]["mean"],
        "after_stderr": res["after"]["stderr"],
        "eval_samples": res["after"]["n"],
        **versions(),
    }
    keys = ["step", "reward", "true_reward", "kl", "entropy", "response_length", "seconds"]
    with (out / "e2e_cpu.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys + list(fixed))
        w.writeheader()
        for r in hist:
            w.writerow({**{k: r[k] for k in keys}, **fixed})
    plot_log(hist, out / "rl.png", title=f"RLOO on SmolLM2-135M, rule {RULE!r}, seed {res['seed']}")
