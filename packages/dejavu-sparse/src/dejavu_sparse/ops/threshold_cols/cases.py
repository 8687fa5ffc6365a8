"""Hypothesis cases for thresholded-input GEMV/GEMM: odd sizes, batch 1-16, thresholds that keep
nothing, everything or a part."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.sampled_from([1, 2, 3, 4, 16]))
        n = draw(st.integers(min_value=1, max_value=80))
        m = draw(st.integers(min_value=1, max_value=70))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))  # interpreter: no bf16 math
        seed = draw(seeds())
        x = random_tensor((batch, n), dtype, seed)
        weight_t = random_tensor((n, m), dtype, seed + 1, scale=0.2)
        threshold = draw(st.sampled_from([-1.0, 0.0, 0.3, 0.8, 100.0]))
        return (x, weight_t, threshold), {}

    return case()
