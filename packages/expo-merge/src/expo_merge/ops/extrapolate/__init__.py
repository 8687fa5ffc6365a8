"""The fused ExPO op: ``aligned + alpha * (aligned - sft)`` rounded once to the output dtype.

``extrapolate`` runs the Triton kernel for CUDA tensors (when triton imports) and the PyTorch
reference otherwise (whose same-dtype bf16/fp16 branch is one ``torch.lerp``, the CPU engine's
fast path); ``backend="reference"|"triton"`` or ``TENSOR_UTILS_BACKEND`` override.
Registered as ``expo_merge::extrapolate`` (``tensor_utils.ops``).
"""

from __future__ import annotations

import torch

from tensor_utils.ops import Backend, Op

from . import naive
from .naive import compute_dtype


def _functional(
    sft: torch.Tensor,
    aligned: torch.Tensor,
    alpha: float,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The custom op's signature: ``extrapolate`` without ``out=`` (a custom op may not return
    one of its inputs)."""
    return naive.extrapolate(sft, aligned, alpha, out_dtype=out_dtype)


def _compiled_call(custom_op, sft, aligned, alpha, *, out_dtype=None, out=None):
    """Under ``torch.compile``: the functional custom op, then a copy into ``out``."""
    if out is None:
        return custom_op(sft, aligned, alpha, out_dtype=out_dtype)
    naive.check_args(sft, aligned, out_dtype, out)
    out.copy_(custom_op(sft, aligned, alpha, out_dtype=out.dtype))
    return out


extrapolate = Op(
    "expo_merge::extrapolate",
    reference=naive.extrapolate,
    backends=[
        Backend(
            "triton",
            "expo_merge.ops.extrapolate.triton:extrapolate",
            aot="expo_merge.ops.extrapolate.triton:aot_launches",
        ),
    ],
    cases="expo_merge.ops.extrapolate.cases:cases",
    schema=_functional,
    compiled_call=_compiled_call,
)

__all__ = ["compute_dtype", "extrapolate", "naive"]
