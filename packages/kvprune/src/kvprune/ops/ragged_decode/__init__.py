"""Decode attention over the ragged per-(batch, KV head) cache, returning attention weights.

``ragged_decode_attention(q, k_pool, v_pool, offsets, lengths, scale, max_len=None,
need_weights=True)`` runs the Triton split-K kernel for CUDA tensors (when triton imports) and
the PyTorch reference otherwise; ``backend="reference"|"triton"`` or ``TENSOR_UTILS_BACKEND``
override. See ``naive.py`` for the layout and the exact contract. Registered as
``kvprune::ragged_decode_attention`` (``tensor_utils.ops``).
"""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

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
    # Not a torch.library custom op: the result is ``(out, None)`` with need_weights=False, and
    # a schema cannot return an optional tensor. torch.compile traces the Python dispatch.
    library=False,
)

__all__ = ["naive", "ragged_decode_attention"]
