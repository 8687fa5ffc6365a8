"""Decode attention over the ragged per-(batch, KV head) cache, returning attention weights.

``ragged_decode_attention(q, k_pool, v_pool, offsets, lengths, scale, max_len=None,
need_weights=True)`` runs the
Triton split-K kernel for CUDA tensors (when triton imports) and the PyTorch reference
otherwise; ``backend="reference"|"triton"`` or ``TENSOR_UTILS_BACKEND`` override. See
``naive.py`` for the layout and the exact contract.
"""

from __future__ import annotations

from tensor_utils.dispatch import dispatched

from . import naive

ragged_decode_attention = dispatched(
    "kvprune_ragged_decode_attention",
    reference=naive.ragged_decode_attention,
    triton="kvprune.ops.ragged_decode.triton:ragged_decode_attention",
)


def __getattr__(name: str):
    # CASES and the case builder need hypothesis, a test-only dependency: import on demand.
    if name in ("CASES", "random_ragged_case"):
        from . import cases

        return getattr(cases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["naive", "ragged_decode_attention"]
