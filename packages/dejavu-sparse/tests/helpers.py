"""Tiny random-init Llama-family models and calibration shared by the tests."""

from __future__ import annotations

import functools

import torch


def tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[model_type]
    kwargs = dict(
        vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
        attn_implementation="sdpa", tie_word_embeddings=False,
    )  # fmt: skip
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cls(**kwargs))
    return model.float().eval()


def token_ids(n: int, seed: int = 1, vocab: int = 97) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@functools.cache
def tiny_calibration(model_type: str = "llama"):
    from dejavu_sparse import calibrate

    model = tiny_model(model_type)
    calib = calibrate(model, token_ids(512), seq_len=64, rank=16, epochs=3, greedy_tokens=64,
                      progress=False)  # fmt: skip
    return calib
