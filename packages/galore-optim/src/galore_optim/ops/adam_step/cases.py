"""Random inputs on which the kernels must equal the reference (test support: needs hypothesis).

Every projection side, odd sizes; fp32/fp16 on the CPU (the interpreter has no bf16 math),
bf16 too on CUDA.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds


def _dtypes() -> list[torch.dtype]:
    extra = [torch.bfloat16] if torch.cuda.is_available() else []
    return [torch.float32, torch.float16, *extra]


@st.composite
def _case(draw, with_moments: bool):
    side = draw(st.sampled_from(["right", "left", "full", "none"]))
    m, n = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    r = draw(st.integers(1, min(m, n)))
    dtype = draw(st.sampled_from(_dtypes()))
    seed = draw(seeds())
    low = {"right": (m, r), "left": (r, n), "full": (r, r), "none": (m, n)}[side]
    gen = torch.Generator().manual_seed(seed)
    left = right = None
    if side in ("left", "full"):
        left = torch.linalg.qr(torch.randn(m, r, generator=gen)).Q.to(dtype)
    if side in ("right", "full"):
        right = torch.linalg.qr(torch.randn(n, r, generator=gen)).Q.T.contiguous().to(dtype)
    weight = random_tensor((m, n), dtype, seed)
    grad = random_tensor(low, dtype, seed + 1)
    if not with_moments:
        return (weight, grad, left, right, side, 0.1, 0.5, 0.01), {}
    exp_avg = random_tensor(low, dtype, seed + 2, scale=0.1)
    exp_avg_sq = random_tensor(low, dtype, seed + 3).abs() * 0.01
    hp = (0.9, 0.999, 1e-6, 3e-3, 0.25, 1e-3)
    return (weight, grad, exp_avg, exp_avg_sq, left, right, side, *hp), {}


def projected_adam_step_cases():
    return _case(True)


def apply_update_cases():
    return _case(False)
