"""CUDA, bfloat16: the adapters-off reference equals the base exactly, and one reward step and
one RL iteration of each algorithm run on one base."""

import pytest
import torch
from perl_rlhf import (
    LoraSpec,
    PerlModel,
    PolicyConfig,
    PolicyTrainer,
    RewardConfig,
    train_reward_model,
)
from perl_rlhf.model import position_ids
from perl_testlib import perturb_lora, tiny

pytestmark = pytest.mark.gpu


def _model(roles=("policy", "value", "reward")):
    base, tok = tiny()
    torch.nn.Module.to(base, device="cuda", dtype=torch.bfloat16)  # in place
    model = PerlModel(base, roles=roles, lora=LoraSpec(rank=4), tokenizer=tok).to("cuda")
    return model, base, tok


def test_reference_equals_base_on_cuda_bf16():
    model, base, tok = _model()
    ids = torch.randint(3, len(tok), (2, 9), device="cuda")
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        plain = model.logits("reference", ids, mask)
        perturb_lora(model)
        assert torch.equal(model.logits("reference", ids, mask), plain)
        assert model.peft is not None
        with model.peft.disable_adapter():
            direct = base(
                input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)
            ).logits
        assert torch.equal(direct, plain)


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo", "ppo"])
def test_reward_step_and_rl_iteration_on_cuda(algorithm):
    from perl_testlib import letter_pairs

    model, _, tok = _model()
    res = train_reward_model(
        model, tok, letter_pairs(8), config=RewardConfig(batch_size=4, max_steps=2), progress=False
    )
    assert len(res.history) == 2
    cfg = PolicyConfig(
        algorithm=algorithm, batch_size=2, samples_per_prompt=2 if algorithm == "rloo" else 1,
        max_new_tokens=4, steps=1,
    )  # fmt: skip
    trainer = PolicyTrainer(model, tok, [{"prompt": "hi:"}, {"prompt": "go:"}], config=cfg)
    row = trainer.step()
    assert row["kl"] == 0.0 and torch.isfinite(torch.tensor(row["reward"]))
