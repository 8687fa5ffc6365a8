"""Demo: PERL on the real SmolLM2-135M-Instruct, on the CPU, with a rule a reader can check
("a response that contains a digit is preferred"): a LoRA reward model learns the rule from
pairs of the model's own samples (held-out accuracy), then a short LoRA RL run on the same base
(RLOO, 8 samples per question, KL to the adapters-off reference) on questions to which a year or
a quantity is a natural answer part of the time, scored by the rule on held-out questions.

    run(ctx) -> list[str]   # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "examples" / "number_rule"


def run(
    ctx,
    *,
    reward_epochs: int = 3,
    reward_steps: int | None = None,
    rl_steps: int = 16,
    eval_questions: int | None = None,
) -> list[str]:
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
        algorithm="rloo", samples_per_prompt=8, batch_size=2, steps=rl_steps, max_new_tokens=20,
        lr=5e-4, temperature=0.7, beta=0.05, whiten_rewards=True,
    )  # fmt: skip
    trainer = PolicyTrainer(
        model, tok, DATA / "questions_rl.jsonl", config=cfg, true_reward_fn=contains_number
    )
    held_out = DATA / "questions_test.jsonl"
    before = trainer.evaluate_rule(contains_number, prompts=held_out, n=eval_questions)
    hist = trainer.train(progress=False).history
    after = trainer.evaluate_rule(contains_number, prompts=held_out, n=eval_questions)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return [
        f"one frozen SmolLM2 base, {len(storages)} parameter storages for policy + value + "
        f"reward adapters and heads (reference = adapters off)",
        f"reward model (LoRA r8, attention): held-out pairwise accuracy "
        f"{rm.metrics['accuracy']:.2f}, AUC {rm.metrics['auc']:.2f} on {int(rm.metrics['n'])} pairs",
        f"RL {rl_steps} RLOO steps: share of held-out answers with a digit "
        f"{before['mean']:.2f} -> {after['mean']:.2f} (+- {after['stderr']:.2f}, "
        f"n {int(after['n'])}), final KL {hist[-1]['kl']:.3f} nats",
    ]
