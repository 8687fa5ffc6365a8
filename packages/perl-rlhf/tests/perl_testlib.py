"""Tiny random-init Llama models and a character-level tokenizer, built in code."""

from __future__ import annotations

import string

import torch

CHARS = string.ascii_letters + string.digits + " .,!?'-:\n"
SPECIALS = ["<pad>", "<eos>", "<unk>"]


def char_tokenizer(extra: str = ""):
    """A PreTrainedTokenizerFast with one token per character (pad 0, eos 1)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(set(CHARS + extra)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    return fast


def tiny_llama(vocab_size: int = 80, *, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny(seed: int = 0, **kw):
    tok = char_tokenizer()
    return tiny_llama(len(tok), seed=seed, **kw), tok


def perturb_lora(model, scale: float = 0.5, seed: int = 1) -> None:
    """Nonzero LoRA B matrices, so adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def letter_pairs(n: int, seed: int = 0) -> list[dict]:
    """Separable preference: the chosen response contains 'x', the rejected one does not."""
    import random

    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "bed", "red", "big"]
    rows = []
    for _ in range(n):
        base = " ".join(rng.choice(words) for _ in range(3))
        pos = rng.randrange(len(base) + 1)
        rows.append({"prompt": "say:", "chosen": base[:pos] + "x" + base[pos:], "rejected": base})
    return rows


# ---- data parallel -----------------------------------------------------------------------


def fixed_rollout(vocab: int, n: int = 8, seed: int = 3):
    """A rollout with fixed random prompts/responses of several lengths (no sampling)."""
    from perl_rlhf.rollout import Rollout

    g = torch.Generator().manual_seed(seed)
    p, t = 5, 7
    prompt = torch.randint(3, vocab, (n, p), generator=g)
    pmask = torch.ones(n, p, dtype=torch.long)
    pmask[::2, :2] = 0
    resp = torch.randint(3, vocab, (n, t), generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    rmask = (torch.arange(t)[None] < lengths[:, None]).long()
    scores = torch.randn(n, generator=g)
    return Rollout(prompt * pmask, pmask, resp * rmask, rmask), scores


def dp_case(algorithm: str, rows: slice | None = None):
    """Train a tiny model on a fixed reward batch and a fixed rollout, on ``rows`` of each (all
    rows by default). Returns the trainable parameters after two reward steps and one RL update."""
    from perl_rlhf import (
        LoraSpec,
        PerlModel,
        PolicyConfig,
        PolicyTrainer,
        RewardConfig,
        train_reward_model,
    )
    from perl_rlhf.rollout import score_rollout

    base, tok = tiny(seed=0)
    model = PerlModel(base, lora=LoraSpec(rank=2), tokenizer=tok)
    perturb_lora(model, 0.05)
    train_reward_model(
        model,
        tok,
        letter_pairs(8),
        config=RewardConfig(lr=1e-2, batch_size=8, epochs=2, center_coef=0.01),
        progress=False,
    )
    cfg = PolicyConfig(
        algorithm=algorithm, batch_size=8, whiten_rewards=True, lr=1e-2, temperature=1.0,
        samples_per_prompt=2 if algorithm == "rloo" else 1,
    )  # fmt: skip
    trainer = PolicyTrainer(model, tok, ["hi:"], config=cfg, reward_fn=lambda p, r: [0.0] * len(r))
    rollout, scores = fixed_rollout(len(tok))
    if rows is not None:
        rollout, scores = rollout.select(rows), scores[rows]
    score_rollout(model, rollout, temperature=1.0, need_values=cfg.uses_value,
                  reward_fn=lambda p, r: [0.0] * len(r), texts=([""] * len(scores), [""] * len(scores)))  # fmt: skip
    rollout.scores = scores
    stats = trainer.update(rollout)
    return (
        [p.detach().clone() for p in model.trainable_parameters()],
        stats,
        [p.detach().clone() for p in model.role_parameters("reward")],
    )


def dp_worker(rank: int, world: int, init_file: str, out_dir: str, algorithms) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        per = 8 // world
        for algorithm in algorithms:
            result = dp_case(algorithm, slice(rank * per, (rank + 1) * per))
            torch.save(result, f"{out_dir}/{algorithm}_{rank}.pt")
    finally:
        dist.destroy_process_group()
