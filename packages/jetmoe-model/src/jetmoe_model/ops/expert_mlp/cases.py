"""Random routings and inputs on which the expert-MLP and MoE-layer backends must equal the
reference, and their comparisons (test support: needs hypothesis and tensor-utils-dev).

Feature sizes are multiples of 8 (``grouped_mm`` needs 16-byte rows); odd token counts and
empty experts. fp32/fp16 on the CPU (the interpreter has no bf16 math), bf16 too on CUDA.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close
from tensor_utils_dev.testing.strategies import random_tensor, seeds

from ..experts.cases import FEATURES, dtypes, routings
from ..routing.cases import same_routing


@st.composite
def _mlp(draw):
    tokens, _top_k, routing, seed = draw(routings())
    d, f = draw(FEATURES), draw(FEATURES)
    dtype = draw(st.sampled_from(dtypes()))
    experts = routing.num_experts
    x = random_tensor((tokens, d), dtype, seed + 1)
    w_in = random_tensor((experts, 2 * f, d), dtype, seed + 2, scale=0.5)
    w_out = random_tensor((experts, d, f), dtype, seed + 3, scale=0.5)
    return (x, w_in, w_out, routing.sorted_pair, routing.expert_offsets), {}


@st.composite
def _layer(draw):
    tokens = draw(st.integers(0, 19))
    experts = draw(st.integers(1, 5))
    top_k = draw(st.integers(1, experts))
    d, f = draw(FEATURES), draw(FEATURES)
    dtype = draw(st.sampled_from(dtypes()))
    seed = draw(seeds())
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, experts, generator=gen) * 3  # fp32 router logits: no ties
    x = random_tensor((tokens, d), dtype, seed + 1)
    w_in = random_tensor((experts, 2 * f, d), dtype, seed + 2, scale=0.5)
    w_out = random_tensor((experts, d, f), dtype, seed + 3, scale=0.5)
    bias = random_tensor((d,), dtype, seed + 4)
    return (x, logits, w_in, w_out, bias, top_k), {}


def mlp_cases():
    return _mlp()


def layer_cases():
    return _layer()


def _close_with_slack(a: torch.Tensor, e: torch.Tensor, name: str) -> None:
    # Two chained matmuls: the fused kernel rounds the activation once where the reference
    # rounds h, silu(g) and the product; half types get a few ulps of slack, fp32 the default.
    # The absolute slack scales with the output's largest entry: a small entry is a cancelling
    # sum of terms of that size, so its rounding error is a few ulps of them, not of itself
    # (fp16 on CUDA: 0.0115 off on an entry of 0.1 in a row whose largest entry is 9.6).
    assert a.dtype == e.dtype, f"{name}: {a.dtype} != {e.dtype}"
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    tol = {torch.float16: 4e-3, torch.bfloat16: 3e-2}.get(a.dtype)
    if tol is None:
        assert_close(a, e, msg=f"{name}: ")
        return
    scale = max(1.0, float(e.detach().abs().amax())) if e.numel() else 1.0
    assert_close(a, e, atol=tol * scale, rtol=tol, msg=f"{name}: ")


def fp16_slack(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Outputs (then the unchanged arguments) with the SwiGLU's half-type slack."""
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        _close_with_slack(a, e, f"output {i}")


def same_layer_output(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """``(out, TopKRouting)`` flattened, then the arguments: ``out`` with the SwiGLU slack, the
    routing (logits compared in fp32: the fused layer returns the router's logits as passed) as
    in ``routing.cases.same_routing``."""
    _close_with_slack(actual[0], expected[0], "out")
    rest_a, rest_e = list(actual[1:]), list(expected[1:])
    rest_a[0], rest_e[0] = rest_a[0].float(), rest_e[0].float()
    same_routing(rest_a, rest_e)
