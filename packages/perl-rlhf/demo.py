"""Demo: PERL on the real SmolLM2-135M-Instruct, on the CPU, with a rule a reader can check
("a response that contains a digit is preferred"): a LoRA reward model learns the rule from
pairs of the model's own samples (held-out accuracy), then a short LoRA RL run on the same base
(REINFORCE with a value baseline, KL to the adapters-off reference) is scored by the rule.

    run(ctx) -> list[str]   # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "examples" / "number_rule"


def run(ctx, *, reward_epochs: int = 1, rl_steps: int = 6) -> list[str]:
    import torch
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
    base, tok = load_base(ctx.model_dir)
    model = PerlModel(base, lora=LoraSpec(rank=8), tokenizer=tok)
    rm = train_reward_model(
        model,
        tok,
        DATA / "pairs_train.jsonl",
        eval_data=DATA / "pairs_test.jsonl",
        config=RewardConfig(lr=3e-4, epochs=reward_epochs, batch_size=8),
        progress=False,
    )
    cfg = PolicyConfig(
        algorithm="reinforce", steps=rl_steps, batch_size=8, max_new_tokens=24, lr=3e-4,
        temperature=1.0, beta=0.05,
    )  # fmt: skip
    trainer = PolicyTrainer(
        model, tok, DATA / "prompts_rl.jsonl", config=cfg, true_reward_fn=contains_number
    )
    before = trainer.evaluate(contains_number, samples=2)
    hist = trainer.train(progress=False).history
    after = trainer.evaluate(contains_number, samples=2)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return [
        f"one frozen SmolLM2 base, {len(storages)} parameter storages for policy + value + "
        f"reward adapters and heads (reference = adapters off)",
        f"reward model (LoRA r8, attention): held-out pairwise accuracy "
        f"{rm.metrics['accuracy']:.2f}, AUC {rm.metrics['auc']:.2f} on {int(rm.metrics['n'])} pairs",
        f"RL {rl_steps} REINFORCE steps: share of responses with a digit {before:.2f} -> {after:.2f}, "
        f"final KL {hist[-1]['kl']:.3f} nats",
    ]
