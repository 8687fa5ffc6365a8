"""Triton kernels against the loop reference: values, both gradients, NaN-poisoned outputs,
odd sizes, empty experts, no tokens, and the GEMV decode path.

On the CPU these run in Triton's interpreter (TRITON_INTERPRET=1): tiny shapes, fp32/fp16.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jetmoe_model.ops.experts import expert_linear, naive
from jetmoe_model.ops.experts.cases import random_expert_index
from jetmoe_model.routing import sort_by_expert

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.strategies import random_tensor, seeds

pytestmark = pytest.mark.triton


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def check(tokens, experts, top_k, n_in, n_out, dtype, input_order, output_order, seed):
    device = _device()
    index = random_expert_index(tokens, experts, top_k, seed)
    routing = sort_by_expert(index.to(device), experts)
    rows = tokens if input_order == "token" else tokens * top_k
    x = random_tensor((rows, n_in), dtype, seed + 1, device=device)
    w = random_tensor((experts, n_out, n_in), dtype, seed + 2, scale=0.5, device=device)
    g = random_tensor((tokens * top_k, n_out), dtype, seed + 3, device=device)
    kwargs = dict(input_order=input_order, output_order=output_order)
    results = {}
    for backend in ("reference", "triton"):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        with poison_allocations():
            y = expert_linear(
                xi,
                wi,
                routing.sorted_pair,
                routing.expert_offsets,
                backend=backend,
                **kwargs,
            )
            dx, dw = torch.autograd.grad(y, (xi, wi), g)
        results[backend] = (y, dx, dw)
    ref_dtype = dtype if device == "cuda" or dtype != torch.float16 else torch.float32
    for name, got, want in zip(
        ("y", "dx", "dw"), results["triton"], results["reference"], strict=True
    ):
        assert got.dtype == want.dtype
        # fp16 sums of up to n_in products: allow a few roundings
        tol = None if dtype == torch.float32 else 4e-3
        assert_close(got, want, dtype=ref_dtype, atol=tol, rtol=tol, msg=f"{name}: ")


@settings(deadline=None, max_examples=12)
@given(
    tokens=st.integers(0, 13),
    experts=st.integers(1, 6),
    top_k=st.integers(1, 3),
    n_in=st.integers(1, 37),
    n_out=st.integers(1, 37),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    input_order=st.sampled_from(naive.INPUT_ORDERS),
    output_order=st.sampled_from(naive.OUTPUT_ORDERS),
    seed=seeds(),
)
def test_triton_equals_loop_for_random_routings(
    tokens, experts, top_k, n_in, n_out, dtype, input_order, output_order, seed
):
    top_k = min(top_k, experts)
    check(tokens, experts, top_k, n_in, n_out, dtype, input_order, output_order, seed)


@pytest.mark.parametrize("tokens", [1, 3])  # 2 and 6 pairs: the GEMV decode path
@pytest.mark.parametrize("input_order", naive.INPUT_ORDERS)
def test_decode_path(tokens, input_order):
    check(tokens, 5, 2, 33, 17, torch.float32, input_order, "pair", seed=tokens)


def test_tiles_straddling_expert_boundaries_and_empty_experts():
    # 40 tokens x top-2 over 7 experts, skewed: many 16-row tiles start mid-expert, some empty
    check(40, 7, 2, 20, 18, torch.float32, "token", "sorted", seed=11)
    check(40, 7, 2, 20, 18, torch.float32, "sorted", "pair", seed=12)


def test_all_pairs_to_one_expert():
    device = _device()
    index = torch.tensor([[3, 1]] * 9, device=device)
    routing = sort_by_expert(index, 5)
    x = torch.randn(9, 19, device=device)
    w = torch.randn(5, 21, 19, device=device)
    with poison_allocations():
        y = expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, backend="triton")
    ref = expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, backend="reference")
    assert_close(y, ref)
