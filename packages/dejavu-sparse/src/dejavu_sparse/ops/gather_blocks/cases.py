"""Hypothesis cases for gathered channel blocks: odd sizes (a short last block), block sizes
1-64, batch 1-16, no / every / one / random kept blocks."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds


@st.composite
def block_masks(draw, blocks: int):
    kind = draw(st.sampled_from(["random", "none", "all", "last", "alternate"]))
    if kind == "none":
        return torch.zeros(blocks, dtype=torch.bool)
    if kind == "all":
        return torch.ones(blocks, dtype=torch.bool)
    if kind == "last":
        return torch.arange(blocks) == blocks - 1
    if kind == "alternate":
        return torch.arange(blocks) % 2 == 0
    gen = torch.Generator().manual_seed(draw(seeds()))
    return torch.rand(blocks, generator=gen) < draw(st.floats(0.1, 0.9))


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.sampled_from([1, 2, 3, 4, 16]))
        n = draw(st.integers(min_value=1, max_value=150))
        m = draw(st.integers(min_value=1, max_value=70))
        block = draw(st.sampled_from([1, 3, 8, 16, 64]))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        seed = draw(seeds())
        keep = draw(block_masks(-(-n // block)))
        x = random_tensor((batch, n), dtype, seed)
        weight_t = random_tensor((n, m), dtype, seed + 1, scale=0.2)
        return (x, weight_t, keep, block), {}

    return case()
