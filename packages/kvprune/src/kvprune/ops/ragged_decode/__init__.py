"""Decode attention over the ragged per-(batch, KV head) cache, returning attention weights.

``ragged_decode_attention(q, k_pool, v_pool, offsets, lengths, scale, max_len=None,
need_weights=True)`` runs the Triton split-K kernel for CUDA tensors (when triton imports) and
the PyTorch reference otherwise; ``backend="reference"|"triton"`` or ``TENSOR_UTILS_BACKEND``
override. See ``naive.py`` for the layout and the exact contract. Registered as
``kvprune::ragged_decode_attention`` (``tensor_utils.ops``).
"""

from __future__ import annotations

import torch

from tensor_utils.ops import Backend, Op

from . import naive


def _schema(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    max_len: int | None = None,
    need_weights: bool = True,
) -> list[torch.Tensor]:
    """The custom op's signature (``[out]`` or ``[out, weights]``: a schema has no optional
    tensor result); as the fake implementation, the output shapes."""
    naive.check_args(q, k_pool, v_pool, offsets, lengths)
    out = q.new_empty(q.shape)
    if not need_weights:
        return [out]
    return [out, q.new_empty((k_pool.shape[0], q.shape[1]), dtype=torch.float32)]


def _to_schema(result):
    out, weights = result
    return [out] if weights is None else [out, weights]


def _compiled_call(custom_op, *args, **kwargs):
    result = custom_op(*args, **kwargs)
    return result[0], (result[1] if len(result) > 1 else None)


ragged_decode_attention = Op(
    "kvprune::ragged_decode_attention",
    reference=naive.ragged_decode_attention,
    backends=[
        Backend(
            "triton",
            "kvprune.ops.ragged_decode.triton:ragged_decode_attention",
            aot="kvprune.ops.ragged_decode.triton:aot_launches",
        )
    ],
    cases="kvprune.ops.ragged_decode.cases:cases",
    schema=_schema,
    to_schema=_to_schema,
    compiled_call=_compiled_call,
)

__all__ = ["naive", "ragged_decode_attention"]
