"""The SwiGLU expert MLP and the MoE layer with ``torch._grouped_mm`` expert matmuls (the
activation, routing and combine in PyTorch); same contracts as ``naive.py``."""

from __future__ import annotations

import torch

from ..experts import grouped_mm
from . import naive


def expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets) -> torch.Tensor:
    return naive.swiglu_experts(
        x, w_in, w_out, sorted_pair, expert_offsets, grouped_mm.expert_linear
    )


def moe_layer(x, logits, w_in, w_out, bias, top_k):
    return naive.moe_layer_with(x, logits, w_in, w_out, bias, top_k, grouped_mm.expert_linear)


__all__ = ["expert_mlp", "moe_layer"]
