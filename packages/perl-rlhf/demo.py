"""Demo: PERL on the real SmolLM2-135M-Instruct, on the CPU, with a rule a reader can check
("an answer of at most 10 words is preferred"): a LoRA reward model learns the rule from pairs
of the model's own answers to "Describe <topic> in a few words." (held-out accuracy), then a
short LoRA RL run on the same base (RLOO, 8 samples per prompt, KL to the adapters-off
reference), rewarded by that model only, scored by the rule on held-out topics. The slow test
(``tests/smollm2_e2e.py``) runs the same recipe at three seeds.

    run(ctx) -> list[str]   # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "examples" / "length_rule"


def run(
    ctx,
    *,
    reward_epochs: int = 3,
    reward_steps: int | None = None,
    rl_steps: int = 16,
    eval_prompts: int | None = None,
) -> list[str]:
    import torch
    from perl_rlhf import (
        LoraSpec,
        PerlModel,
        PolicyConfig,
        PolicyTrainer,
        RewardConfig,
        WordBand,
        load_base,
        train_reward_model,
    )

    torch.manual_seed(0)
    rule = WordBand(1, 10)
    base, tok = load_base(ctx.model_dir, device=getattr(ctx, "device", "cpu"))
    model = PerlModel(base, lora=LoraSpec(rank=8), tokenizer=tok)
    rm = train_reward_model(
        model,
        tok,
        DATA / "pairs_train.jsonl",
        eval_data=DATA / "pairs_test.jsonl",
        config=RewardConfig(lr=1e-3, epochs=reward_epochs, batch_size=8, max_steps=reward_steps),
        progress=False,
    )
    cfg = PolicyConfig(
        algorithm="rloo", samples_per_prompt=8, batch_size=2, steps=rl_steps, max_new_tokens=32,
        lr=5e-4, temperature=0.7, beta=0.2, whiten_rewards=True,
    )  # fmt: skip
    trainer = PolicyTrainer(model, tok, DATA / "prompts_rl.jsonl", config=cfg, true_reward_fn=rule)
    held_out = DATA / "prompts_rl_test.jsonl"
    before = trainer.evaluate_rule(rule, prompts=held_out, n=eval_prompts, samples=4)
    hist = trainer.train(progress=False).history
    after = trainer.evaluate_rule(rule, prompts=held_out, n=eval_prompts, samples=4)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return [
        f"one frozen SmolLM2 base, {len(storages)} parameter storages for policy + value + "
        f"reward adapters and heads (reference = adapters off)",
        f"reward model (LoRA r8, attention): held-out pairwise accuracy "
        f"{rm.metrics['accuracy']:.2f}, AUC {rm.metrics['auc']:.2f} on {int(rm.metrics['n'])} pairs",
        f"RL {rl_steps} RLOO steps: share of held-out answers of at most 10 words "
        f"{before['mean']:.2f} -> {after['mean']:.2f} (+- {after['stderr']:.2f}, "
        f"n {int(after['n'])}), largest KL {max(r['kl'] for r in hist):.2f} nats",
    ]
