"""Shared helpers for the megalodon-model tests: tiny configs and random weights."""

from __future__ import annotations

import torch

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    z_dim=16,
    value_dim=48,
    intermediate_size=40,
    chunk_size=8,
    norm_num_groups=4,
    cema_ndim=4,
    swiglu=True,
    rescale_nffn=True,
)


def tiny_model(seed: int = 0, **overrides):
    from megalodon_model import MegalodonConfig, MegalodonForCausalLM

    torch.manual_seed(seed)
    model = MegalodonForCausalLM(MegalodonConfig(**{**TINY, **overrides}))
    randomize_(model, seed)
    return model.eval()


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Perturb every norm/scale parameter (initialised to 0) so all of them matter in tests."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm.bias", "mega.gamma", "mega.beta")):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model
