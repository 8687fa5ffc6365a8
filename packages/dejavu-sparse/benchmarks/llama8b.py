"""A one-layer Llama-3-8B-shaped model with synthetic weights, calibrated on synthetic tokens,
for the decode benchmarks (speed does not depend on the weight values; thresholds come from
this model's own activations, so the requested sparsity is met)."""

from __future__ import annotations

from typing import Any

import torch

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=128)  # fmt: skip


def build(dtype=torch.float32, device="cpu", layers: int = 1, vocab: int = 256, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    extra: dict[str, Any] = {"rope_theta": 500000.0, "attn_implementation": "sdpa"}
    config = LlamaConfig(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=8192,
                         tie_word_embeddings=True, **LLAMA3_8B, **extra)  # fmt: skip
    with torch.device(device):
        model: Any = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def calibration(model, tokens: int = 512, seq_len: int = 128, rank: int = 1000, seed: int = 0):
    """Thresholds from the model's activations on random tokens; Deja Vu predictors trained one
    pass over them (their quality does not matter for speed, their size does)."""
    from dejavu_sparse import calibrate

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (tokens,), generator=g)
    return calibrate(model, ids, seq_len=seq_len, rank=rank, epochs=1, greedy=False,
                     progress=False, source="random tokens")  # fmt: skip
