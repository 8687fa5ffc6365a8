"""Hypothesis cases for gathered-row GEMV/GEMM: odd sizes, batch 1-16, empty and full selections."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds


@st.composite
def selections(draw, n: int):
    """Sorted, shuffled, empty or full index sets over ``range(n)`` (int64 or int32)."""
    kind = draw(st.sampled_from(["random", "empty", "full", "one"]))
    seed = draw(seeds())
    gen = torch.Generator().manual_seed(seed)
    if kind == "empty":
        idx = torch.empty(0, dtype=torch.int64)
    elif kind == "full":
        idx = torch.arange(n)
    elif kind == "one":
        idx = torch.tensor([n - 1])
    else:
        k = draw(st.integers(min_value=1, max_value=n))
        idx = torch.randperm(n, generator=gen)[:k]
        if draw(st.booleans()):
            idx = idx.sort().values
    return idx.to(draw(st.sampled_from([torch.int64, torch.int32])))


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.sampled_from([1, 2, 3, 4, 16]))
        n = draw(st.integers(min_value=1, max_value=70))
        k = draw(st.integers(min_value=1, max_value=80))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))  # interpreter: no bf16 math
        seed = draw(seeds())
        x = random_tensor((batch, k), dtype, seed)
        weight = random_tensor((n, k), dtype, seed + 1, scale=0.2)
        return (x, weight, draw(selections(n))), {}

    return case()
