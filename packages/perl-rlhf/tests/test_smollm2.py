"""End to end on the real SmolLM2-135M-Instruct (CPU, slow): a LoRA reward model learns the
number rule from the example data (held-out accuracy), and LoRA RL on the same base raises the
rule's reward with the KL to the reference bounded. The demo runs too."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

DATA = Path(__file__).parents[1] / "examples" / "number_rule"
pytestmark = pytest.mark.slow


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
        train_reward_model,
    )

    torch.manual_seed(0)
    torch.set_num_threads(2)
    base, tok = load_base(smollm2)
    model = PerlModel(base, lora=LoraSpec(rank=8), tokenizer=tok)
    rm = train_reward_model(
        model, tok, DATA / "pairs_train.jsonl", eval_data=DATA / "pairs_test.jsonl",
        config=RewardConfig(lr=1e-3, epochs=3, batch_size=8), progress=False,
    )  # fmt: skip
    print(f"\nreward model, held-out pairs: {rm.metrics}")
    assert rm.metrics["accuracy"] >= 0.75, rm.metrics
    cfg = PolicyConfig(
        algorithm="reinforce", steps=10, batch_size=8, max_new_tokens=24, lr=3e-4,
        temperature=1.0, beta=0.05,
    )  # fmt: skip
    trainer = PolicyTrainer(
        model, tok, DATA / "prompts_rl.jsonl", config=cfg, true_reward_fn=contains_number
    )
    before = trainer.evaluate(contains_number, samples=2)
    hist = trainer.train(progress=False).history
    after = trainer.evaluate(contains_number, samples=2)
    kls = [round(r["kl"], 4) for r in hist]
    print(f"rule reward before RL {before:.3f}, after {after:.3f}; KL per step {kls}")
    assert after > before, (before, after)
    assert max(abs(r["kl"]) for r in hist) < 5.0


def test_demo(smollm2, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "perl_demo", Path(__file__).parents[1] / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = demo.run(SimpleNamespace(model_dir=smollm2, workdir=tmp_path, device="cpu"), rl_steps=2)
    assert len(lines) == 3 and "accuracy" in lines[1]
