"""Tiny models, tokenizers and problems built in code for rho-select's tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEXT = (
    "The quick brown fox jumps over the lazy dog. A reference model scores every token; "
    "the student trains on the tokens whose loss exceeds the reference loss the most. "
    "Selective language modeling keeps the top tokens of each batch and drops the rest."
)


def tiny_tokenizer(vocab_size: int = 96):
    """A byte-level BPE tokenizer trained in code on a few sentences (with an EOS token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def full_logits_loss(hidden, weight, labels, mask, count):
    """The naive selective loss: full logits, per-token cross entropy, a mask, / count."""
    logits = hidden.float() @ weight.float().t()
    tokens = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        reduction="none",
        ignore_index=-100,
    ).view(labels.shape)
    return (tokens * mask).sum() / count


def problem(seed, shape, hidden, vocab, *, ignored=0.2, dtype=torch.float32, requires_grad=True):
    """Random hidden states, LM head, labels (some -100) and reference losses."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(*shape, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(dtype)
    labels = torch.randint(0, vocab, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < ignored] = -100
    ref = torch.rand(shape, generator=gen) * 4
    if requires_grad:
        h.requires_grad_(True)
        w.requires_grad_(True)
    return h, w, labels, ref


def distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One gloo rank: its share of a fixed batch (rank 0 gets 3 rows, rank 1 gets 2: sizes may
    differ) through ``selective_loss`` in ``"batch"`` and ``"random"`` mode; saves the masks,
    statistics and gradients."""
    import torch.distributed as dist
    from rho_select import selective_loss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        h, w, labels, ref = distributed_problem()
        rows = slice(0, 3) if rank == 0 else slice(3, 5)
        result = {}
        for mode in ("batch", "random"):
            hh = h[rows].detach().requires_grad_()
            ww = w.detach().requires_grad_()
            gen = torch.Generator().manual_seed(0) if mode == "random" else None
            out = selective_loss(hh, ww, labels[rows], ref[rows], 0.45, mode=mode, generator=gen)
            out.loss.backward()
            grad_weight = grad_of(ww)
            dist.all_reduce(grad_weight)  # what DDP does: average the weight gradient over ranks
            grad_weight /= world
            result[mode] = {
                "mask": out.selected_mask,
                "fraction": out.selected_fraction,
                "loss": out.loss.detach(),
                "grad_hidden": grad_of(hh),
                "grad_weight": grad_weight,
            }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def grad_of(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, which a backward must have filled."""
    if t.grad is None:
        raise AssertionError("no gradient reached the tensor")
    return t.grad


def distributed_problem():
    # ties on purpose: excess values repeat across the two ranks' shares
    h, w, labels, ref = problem(21, (5, 7), 12, 40, ignored=0.25, requires_grad=False)
    ref = (ref * 2).round() / 2
    return h, w, labels, ref
