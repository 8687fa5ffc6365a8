"""Hypothesis cases for gathered-column GEMV/GEMM: odd sizes, batch 1-16, empty/full selections."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds

from ..gather_rows.cases import selections


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.sampled_from([1, 2, 3, 4, 16]))
        n = draw(st.integers(min_value=1, max_value=80))
        m = draw(st.integers(min_value=1, max_value=70))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))  # interpreter: no bf16 math
        seed = draw(seeds())
        idx = draw(selections(n))
        x = random_tensor((batch, idx.shape[0]), dtype, seed)
        weight_t = random_tensor((n, m), dtype, seed + 1, scale=0.2)
        return (x, weight_t, idx), {}

    return case()
