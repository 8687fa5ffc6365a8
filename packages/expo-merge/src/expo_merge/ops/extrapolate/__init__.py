"""The fused ExPO op: ``aligned + alpha * (aligned - sft)`` rounded once to the output dtype.

``extrapolate`` runs the Triton kernel for CUDA tensors (when triton imports) and the PyTorch
reference otherwise; ``backend="reference"|"triton"`` or ``TENSOR_UTILS_BACKEND`` override.
"""

from __future__ import annotations

import torch

from tensor_utils.dispatch import dispatched

from . import naive
from .naive import compute_dtype

extrapolate = dispatched(
    "expo_extrapolate",
    reference=naive.extrapolate,
    triton="expo_merge.ops.extrapolate.triton:extrapolate",
)


def _cases():
    """Small inputs for the cross-package kernel-vs-reference suite (interpreter-safe: no bf16)."""
    from hypothesis import strategies as st

    from tensor_utils_dev.testing.strategies import random_tensor, seeds, shapes

    half_or_single = st.sampled_from([torch.float32, torch.float16])

    @st.composite
    def case(draw):
        shape = draw(shapes(max_dims=3, max_side=37))
        in_dtype, out_dtype = draw(half_or_single), draw(half_or_single)
        seed = draw(seeds())
        sft, aligned = (
            random_tensor(shape, in_dtype, seed),
            random_tensor(shape, in_dtype, seed + 1),
        )
        alpha = draw(st.floats(min_value=-2.0, max_value=8.0, allow_nan=False))
        return (sft, aligned, alpha), {"out_dtype": out_dtype}

    return case()


def __getattr__(name):
    # CASES needs hypothesis (a test dependency): built only when the test suite asks for it.
    if name == "CASES":
        return {"expo_extrapolate": _cases()}
    raise AttributeError(name)


__all__ = ["compute_dtype", "extrapolate", "naive"]
