"""Shared helpers for the jetmoe-model tests: tiny configs, random weights, transformers' twin
(random routings: ``jetmoe_model.routing.random_expert_index``)."""

from __future__ import annotations

import torch

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_key_value_heads=2,
    kv_channels=8,
    intermediate_size=24,
    num_local_experts=4,
    num_experts_per_tok=2,
    rms_norm_eps=1e-5,
)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Overwrite every parameter (biases and norms too) with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * scale
            p.copy_(noise + (1.0 if "norm" in name else 0.0))
    return model


def transformers_twin(ours, attn: str = "eager"):
    """transformers' own JetMoeForCausalLM with our weights (for parity tests)."""
    from transformers import JetMoeConfig, JetMoeForCausalLM

    cfg = ours.config
    theirs_cfg = JetMoeConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_key_value_heads=cfg.num_key_value_heads,
        kv_channels=cfg.kv_channels,
        intermediate_size=cfg.intermediate_size,
        num_local_experts=cfg.num_local_experts,
        num_experts_per_tok=cfg.num_experts_per_tok,
        rms_norm_eps=cfg.rms_norm_eps,
        attn_implementation=attn,
    )
    theirs = JetMoeForCausalLM(theirs_cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.to(next(ours.parameters()).dtype).eval()
