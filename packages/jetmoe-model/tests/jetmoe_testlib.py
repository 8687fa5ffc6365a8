"""Shared helpers for the jetmoe-model tests: tiny configs, random weights, transformers' twin
(random routings: ``jetmoe_model.ops.experts.cases.random_expert_index``), kernel options."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

M = TypeVar("M", bound=torch.nn.Module)

TINY: dict[str, Any] = dict(
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


def randomize_(model: M, seed: int = 0, scale: float = 0.3) -> M:
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
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters=dict(cfg.rope_parameters),
    )
    theirs = JetMoeForCausalLM(theirs_cfg)
    theirs.set_attn_implementation(attn)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    dtype = next(ours.parameters()).dtype
    return theirs.to(dtype).eval()  # pyright: ignore[reportArgumentType]  (transformers' to() stub)


def set_kernel_options(monkeypatch, **changes) -> None:
    """Use the current kernel options with ``changes`` for this test (restored afterwards)."""
    from jetmoe_model.ops import options

    monkeypatch.setattr(options, "_current", options.kernel_options().replace(**changes))


def set_kernel_override(monkeypatch, kind: str, config: dict | None) -> None:
    """``config_overrides[kind] = config`` (``None``: removed) for this test."""
    from jetmoe_model.ops import options

    monkeypatch.setattr(options, "_current", options.kernel_options().with_override(kind, config))


def route_node_path():
    """``use_route_node`` of ``benchmarks/unfused_moe.py`` (the two-node Triton layer path kept
    for comparison with the fused layer op)."""
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from unfused_moe import use_route_node  # pyright: ignore[reportMissingImports]  (benchmarks/, on sys.path above)

    return use_route_node
