"""Shared builders for kvprune tests: tiny random Llama-family models and a reference rule."""

from __future__ import annotations

import math
from typing import Any

import torch
from kvprune import rules


def tiny_model(
    kind: str = "llama",
    *,
    layers: int = 2,
    heads: int = 6,
    kv_heads: int = 2,
    head_dim: int = 16,
    vocab: int = 101,
    seed: int = 0,
):
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=heads * head_dim,
        intermediate_size=2 * heads * head_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if kind == "llama":
        config = LlamaConfig(**common)
    elif kind == "mistral":
        config = MistralConfig(**common, sliding_window=None)
    elif kind == "qwen2":
        config = Qwen2Config(**common, use_sliding_window=False)
    else:
        raise ValueError(kind)
    return AutoModelForCausalLM.from_config(config).eval()


def token_table(vocab: int = 101) -> torch.Tensor:
    """Ids 1-4 special, 5-14 punctuation, the rest normal."""
    t = torch.zeros(vocab, dtype=torch.int8)
    t[1:5] = rules.CLS_SPECIAL
    t[5:15] = rules.CLS_PUNCT
    return t


def rule_keep_python(cls, pos, score, n_real, p) -> set[int]:
    """The prefill rule for one segment, written plainly: indices of kept tokens.

    ``cls``, ``pos``, ``score`` are lists over the prompt (pos -1 = padding); ``p`` a dict of
    ints."""
    newest = n_real - 1
    grown = (p.get("window_q", 0) * n_real >> rules.FRACTION_BITS) - p["n_sink"]
    window = max(p["window"], grown)
    k_f = max(p["k_f"], (p.get("k_f_q", 0) * n_real >> rules.FRACTION_BITS) - window - p["n_sink"])
    prot, cand = set(), []
    for j, (c, q, s) in enumerate(zip(cls, pos, score, strict=True)):
        if q < 0:
            continue
        if (
            (p["level"] >= 1 and c == rules.CLS_SPECIAL)
            or (p["level"] >= 2 and c == rules.CLS_PUNCT)
            or q < p["n_sink"]
            or q >= p["keep_from"]
            or q > newest - window
        ):
            prot.add(j)
        else:
            cand.append((s, q, j))
    cand.sort(key=lambda t: (-t[0], -t[1]))
    return prot | {j for _, _, j in cand[: max(0, k_f)]}


def causal_attention(n_rows: int, n: int, heads: int, seed: int, real=None, temp: float = 2.0):
    """Random attention probabilities of the last ``n_rows`` rows over ``n`` keys: ``[heads, R, n]``."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(heads, n_rows, n, generator=gen) * temp
    rows = torch.arange(n - n_rows, n)
    allowed = torch.arange(n)[None, :] <= rows[:, None]
    if real is not None:
        allowed = allowed & real[None, :]
    logits = logits.masked_fill(~allowed, -math.inf)
    return torch.nan_to_num(torch.softmax(logits, -1), nan=0.0)
