"""End to end on the real SmolLM2-135M-Instruct (CPU, slow): a LoRA reward model learns the
number rule from the example data (held-out accuracy), and LoRA RL (RLOO) on the same base,
rewarded by that model, raises the rule's true reward on held-out questions with the KL to the
reference bounded. The demo runs too.

``PERL_RLHF_E2E_OUT=DIR`` writes the RL run (per-step log, before/after rule reward, plot) there.
"""

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

DATA = Path(__file__).parents[1] / "examples" / "number_rule"
pytestmark = pytest.mark.slow

# RLOO, 2 questions x 8 samples per step: the settings the benchmark page reports.
RL_SETTINGS = dict(
    algorithm="rloo", samples_per_prompt=8, batch_size=2, steps=16,
    max_new_tokens=20, lr=5e-4, temperature=0.7, beta=0.05, whiten_rewards=True,
)  # fmt: skip
EVAL_SAMPLES = 2  # per held-out question: 48 x 2 = 96 samples


@pytest.fixture(scope="module")
def smollm2():
    from tensor_utils_dev.models import smollm2_dir

    return smollm2_dir()


def test_reward_model_learns_the_rule_and_rl_raises_it(smollm2):
    from perl_rlhf import (
        LoraSpec,
        PerlModel,
        PolicyConfig,
        PolicyTrainer,
        RewardConfig,
        contains_number,
        load_base,
        plot_log,
        train_reward_model,
        write_log,
    )

    torch.manual_seed(0)
    # One thread: on a shared 2-core machine two OpenMP threads wait on each other while other
    # processes hold the cores (an RL step took 146 s with two threads, 26 s with one).
    torch.set_num_threads(1)
    base, tok = load_base(smollm2)
    model = PerlModel(base, lora=LoraSpec(rank=8), tokenizer=tok)
    rm = train_reward_model(
        model, tok, DATA / "pairs_train.jsonl", eval_data=DATA / "pairs_test.jsonl",
        config=RewardConfig(lr=1e-3, epochs=3, batch_size=8), progress=False,
    )  # fmt: skip
    print(f"\nreward model, held-out pairs: {rm.metrics}")
    assert rm.metrics["accuracy"] >= 0.75, rm.metrics
    trainer = PolicyTrainer(
        model,
        tok,
        DATA / "questions_rl.jsonl",
        config=PolicyConfig(**RL_SETTINGS),  # pyright: ignore[reportArgumentType]
        true_reward_fn=contains_number,
    )
    held_out = DATA / "questions_test.jsonl"
    before = trainer.evaluate_rule(contains_number, prompts=held_out, samples=EVAL_SAMPLES)
    hist = trainer.train(progress=False).history
    after = trainer.evaluate_rule(contains_number, prompts=held_out, samples=EVAL_SAMPLES)
    se = math.hypot(before["stderr"], after["stderr"])
    kls = [round(r["kl"], 3) for r in hist]
    print(
        f"rule reward on held-out questions: before {before['mean']:.3f} +- {before['stderr']:.3f}, "
        f"after {after['mean']:.3f} +- {after['stderr']:.3f} (n {int(after['n'])}); "
        f"rise {after['mean'] - before['mean']:.3f} = {(after['mean'] - before['mean']) / se:.1f} "
        f"standard errors; KL per step {kls}; "
        f"training-sample rule reward {[round(r['true_reward'], 2) for r in hist]}"
    )
    out = os.environ.get("PERL_RLHF_E2E_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_log(hist, Path(out) / "rl_log.jsonl")
        summary = {"reward_model": rm.metrics, "before": before, "after": after, **RL_SETTINGS}
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        write_csv(Path(out) / "e2e_cpu.csv", hist, summary)
        plot_log(hist, Path(out) / "rl.png", title="RLOO on SmolLM2-135M, number rule")
    # The rise must be clear of sampling noise, and the policy must stay near the reference.
    assert after["mean"] - before["mean"] > 2 * se, (before, after)
    assert max(abs(r["kl"]) for r in hist) < 5.0, kls


def write_csv(path: Path, hist: list[dict], summary: dict) -> None:
    """One row per RL step, with the run's settings and before/after rule reward on each row."""
    import csv
    import platform

    import peft
    import transformers

    fixed = {
        "model": "SmolLM2-135M-Instruct",
        "device": f"{platform.machine()} cpu, {torch.get_num_threads()} thread",
        **{k: v for k, v in summary.items() if k not in ("reward_model", "before", "after")},
        "rm_accuracy": summary["reward_model"]["accuracy"],
        "rm_auc": summary["reward_model"]["auc"],
        "before_mean": summary["before"]["mean"],
        "before_stderr": summary["before"]["stderr"],
        "after_mean": summary["after"]["mean"],
        "after_stderr": summary["after"]["stderr"],
        "eval_samples": summary["after"]["n"],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    keys = ["step", "reward", "true_reward", "kl", "entropy", "response_length", "seconds"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys + list(fixed))
        w.writeheader()
        for r in hist:
            w.writerow({**{k: r[k] for k in keys}, **fixed})


def test_demo(smollm2, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "perl_demo", Path(__file__).parents[1] / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = demo.run(
        SimpleNamespace(model_dir=smollm2, workdir=tmp_path, device="cpu"),
        reward_steps=2,
        rl_steps=1,
        eval_questions=4,
    )
    assert len(lines) == 3 and "accuracy" in lines[1] and "->" in lines[2]
