"""Random routings and expert-linear inputs on which every backend must equal the reference
(test support: needs hypothesis and tensor-utils-dev).

Feature sizes are multiples of 8 (``grouped_mm`` needs 16-byte rows); odd token counts, empty
experts and every input/output order. fp32/fp16 on the CPU (the interpreter has no bf16 math),
bf16 too on CUDA.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds

from ...routing import sort_by_expert
from . import naive

FEATURES = st.sampled_from([8, 16, 24])


def dtypes() -> list[torch.dtype]:
    return [torch.float32, torch.float16, *([torch.bfloat16] if torch.cuda.is_available() else [])]


def random_expert_index(
    tokens: int, experts: int, top_k: int, seed: int, skew: float = 3.0
) -> torch.Tensor:
    """``[tokens, top_k]`` distinct expert ids per token from a skewed distribution, so some
    experts often receive nothing: random routings for the tests and the property cases."""
    gen = torch.Generator().manual_seed(seed)
    if tokens == 0:
        return torch.zeros(0, top_k, dtype=torch.int64)
    weights = torch.rand(experts, generator=gen) ** skew + 1e-4
    return torch.stack([torch.multinomial(weights, top_k, generator=gen) for _ in range(tokens)])


@st.composite
def routings(draw, max_tokens: int = 9, max_experts: int = 5):
    """``(tokens, top_k, Routing, seed)`` of a random skewed routing."""
    tokens = draw(st.integers(0, max_tokens))
    experts = draw(st.integers(1, max_experts))
    top_k = draw(st.integers(1, experts))
    seed = draw(seeds())
    return (
        tokens,
        top_k,
        sort_by_expert(random_expert_index(tokens, experts, top_k, seed), experts),
        seed,
    )


@st.composite
def _case(draw):
    tokens, top_k, routing, seed = draw(routings())
    n_in, n_out = draw(FEATURES), draw(FEATURES)
    dtype = draw(st.sampled_from(dtypes()))
    input_order = draw(st.sampled_from(naive.INPUT_ORDERS))
    output_order = draw(st.sampled_from(naive.OUTPUT_ORDERS))
    rows = tokens if input_order == "token" else tokens * top_k
    x = random_tensor((rows, n_in), dtype, seed + 1)
    w = random_tensor((routing.num_experts, n_out, n_in), dtype, seed + 2, scale=0.5)
    kwargs = dict(input_order=input_order, output_order=output_order)
    return (x, w, routing.sorted_pair, routing.expert_offsets), kwargs


def cases():
    return _case()
