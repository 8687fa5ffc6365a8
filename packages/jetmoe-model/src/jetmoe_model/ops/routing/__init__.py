"""Top-k routing + the expert sort as one op (semantics: ``jetmoe_model.routing.top_k_route``).

    route = top_k_route(logits, top_k, gate_dtype, backend=None)

The ``triton`` backend runs ``triton.py`` (1-2 launches instead of ~10 PyTorch ops, gates
differentiable) and also returns ``Routing.pair_position`` (the sorted row of each pair);
``reference``/``grouped_mm`` run the PyTorch spec.
"""

from __future__ import annotations

import functools

import torch

from ...routing import TopKRouting
from ..experts import resolve_backend
from . import naive


@functools.cache
def triton_kernels():
    from . import triton as kernels

    return kernels


def top_k_route(
    logits: torch.Tensor, top_k: int, gate_dtype: torch.dtype, *, backend: str | None = None
) -> TopKRouting:
    if resolve_backend(logits, backend) != "triton":
        return naive.top_k_route(logits, top_k, gate_dtype)
    experts = logits.shape[-1]
    if logits.dim() != 2:
        raise ValueError(f"logits must be [tokens, experts], got shape {tuple(logits.shape)}")
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k={top_k} must be between 1 and the number of experts ({experts})")
    return triton_kernels().top_k_route(logits, top_k, gate_dtype)


__all__ = ["naive", "top_k_route", "triton_kernels"]
