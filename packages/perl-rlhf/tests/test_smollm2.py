"""End to end on the real SmolLM2-135M-Instruct (CPU, slow), at seeds 0, 1 and 2: a LoRA reward
model learns the length rule ("an answer of at most 10 words is preferred") from the example
data (held-out accuracy), and LoRA RL (RLOO) on the same base, rewarded by that model, raises
the rule's true reward on held-out topics by more than two standard errors with the KL to the
reference bounded (``smollm2_e2e.py`` holds the recipe). The demo runs too.

``PERL_RLHF_E2E_OUT=DIR`` writes each seed's RL run (per-step log and CSV, summary, plot) there.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from smollm2_e2e import MAX_KL, MIN_RISE, run, write_outputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from tensor_utils_dev.models import smollm2_dir

    return smollm2_dir()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_model_learns_the_rule_and_rl_raises_it(smollm2, seed):
    res = run(smollm2, seed, log=lambda line: print(line, flush=True))
    out = os.environ.get("PERL_RLHF_E2E_OUT")
    if out:
        write_outputs(res, Path(out) / f"seed{seed}")
    assert res["reward_model"]["accuracy"] >= 0.75, res["reward_model"]
    # The rise must be clear of sampling noise, and the policy must stay near the reference.
    assert res["rise_in_stderr"] > MIN_RISE, (res["before"], res["after"])
    assert res["max_abs_kl"] < MAX_KL, [round(r["kl"], 3) for r in res["history"]]


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
        eval_prompts=4,
    )
    assert len(lines) == 3 and "accuracy" in lines[1] and "->" in lines[2]
