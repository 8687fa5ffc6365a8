"""The expert operator: grouped backends equal the loop (values and gradients) for random
routings with empty experts, and bad input fails with a clear message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jetmoe_model.ops.experts import expert_linear, naive
from jetmoe_model.ops.experts.cases import random_expert_index
from jetmoe_model.routing import sort_by_expert

from tensor_utils_dev.testing import assert_close
from tensor_utils_dev.testing.strategies import random_tensor, seeds


@st.composite
def problems(draw, *, aligned: bool, max_tokens: int = 24, max_dim: int = 24):
    tokens = draw(st.integers(0, max_tokens))
    experts = draw(st.integers(1, 8))
    top_k = draw(st.integers(1, experts))
    if aligned:  # torch._grouped_mm wants 16-byte rows
        n_in = 8 * draw(st.integers(1, max_dim // 8))
        n_out = 8 * draw(st.integers(1, max_dim // 8))
    else:
        n_in = draw(st.integers(1, max_dim))
        n_out = draw(st.integers(1, max_dim))
    input_order = draw(st.sampled_from(naive.INPUT_ORDERS))
    output_order = draw(st.sampled_from(naive.OUTPUT_ORDERS))
    seed = draw(seeds())
    index = random_expert_index(tokens, experts, top_k, seed)
    routing = sort_by_expert(index, experts)
    rows = tokens if input_order == "token" else tokens * top_k
    x = random_tensor((rows, n_in), torch.float32, seed + 1)
    w = random_tensor((experts, n_out, n_in), torch.float32, seed + 2, scale=0.5)
    return x, w, routing, dict(input_order=input_order, output_order=output_order)


def run(backend, x, w, routing, kwargs, grad_seed=0):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, backend=backend, **kwargs)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed))
    dx, dw = torch.autograd.grad(y, (x, w), g)
    return y, dx, dw


def per_pair_reference(x, w, routing, kwargs):
    """Independent spec: one matmul per pair, looked up from the expert index directly."""
    pairs = routing.sorted_pair.numel()
    counts = routing.expert_counts().tolist()
    expert_of_sorted = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    k = pairs // x.shape[0] if kwargs["input_order"] == "token" and x.shape[0] else 1
    out = torch.zeros(pairs, w.shape[1], dtype=torch.float64)
    for i in range(pairs):
        pair = routing.sorted_pair[i].item()
        src = {"token": pair // k, "pair": pair, "sorted": i}[kwargs["input_order"]]
        dst = pair if kwargs["output_order"] == "pair" else i
        out[dst] = x[src].double() @ w[expert_of_sorted[i]].double().T
    return out


@settings(deadline=None, max_examples=40)
@given(problems(aligned=False))
def test_loop_reference_matches_a_per_pair_spec(problem):
    x, w, routing, kwargs = problem
    y = expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, backend="loop", **kwargs)
    assert_close(y, per_pair_reference(x, w, routing, kwargs).float(), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="needs torch._grouped_mm")
@settings(deadline=None, max_examples=40)
@given(problems(aligned=True))
def test_grouped_mm_equals_the_loop_values_and_gradients(problem):
    x, w, routing, kwargs = problem
    y_ref, dx_ref, dw_ref = run("reference", x, w, routing, kwargs)
    y, dx, dw = run("grouped_mm", x, w, routing, kwargs)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    assert_close(dw, dw_ref)


def test_empty_experts_get_zero_weight_gradient():
    index = torch.tensor([[0, 2], [2, 0], [0, 2]])
    routing = sort_by_expert(index, 4)
    x = torch.randn(3, 8)
    w = torch.randn(4, 8, 8)
    for backend in ("reference", "grouped_mm"):
        _, _, dw = run(backend, x, w, routing, dict(input_order="token", output_order="pair"))
        assert (dw[1] == 0).all() and (dw[3] == 0).all()
        assert dw[0].abs().sum() > 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x, w, r: (x[:, :5], w, r), "x has 5 features but weight expects 8"),
        (lambda x, w, r: (x, w[0], r), "weight must be 3-D"),
        (lambda x, w, r: (x.half(), w, r), "dtype"),
        (lambda x, w, r: (torch.randn(4, 8), w, r), "not a multiple of the 4 tokens"),
    ],
)
def test_bad_input_is_a_clear_error(make, message):
    routing = sort_by_expert(torch.tensor([[0, 1], [1, 2], [2, 3]]), 4)
    x, w, r = make(torch.randn(3, 8), torch.randn(4, 8, 8), routing)
    for backend in ("reference", "grouped_mm"):
        with pytest.raises(ValueError, match=message):
            expert_linear(x, w, r.sorted_pair, r.expert_offsets, backend=backend)


def test_orders_and_backend_names_are_checked():
    routing = sort_by_expert(torch.tensor([[0, 1]]), 2)
    x, w = torch.randn(1, 8), torch.randn(2, 8, 8)
    with pytest.raises(ValueError, match="input_order 'tokens'"):
        expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, input_order="tokens")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        expert_linear(x, w, routing.sorted_pair, routing.expert_offsets, backend="fast")
    with pytest.raises(ValueError, match=r"multiples of 4 for torch\.float32"):
        w7 = torch.randn(2, 7, 8)
        expert_linear(x, w7, routing.sorted_pair, routing.expert_offsets, backend="grouped_mm")


def test_backend_selection(monkeypatch):
    from tensor_utils import ops

    x = torch.randn(2, 2)
    monkeypatch.delenv("TENSOR_UTILS_BACKEND", raising=False)
    ops._reset_override_from_env()
    select = expert_linear.select
    assert select(x.device.type, x.dtype) == "reference"  # CPU tensors
    assert select(x.device.type, x.dtype, "loop") == "reference"
    assert select(x.device.type, x.dtype, "grouped_mm") == "grouped_mm"
    assert select("cuda", x.dtype, "grouped_mm") == "grouped_mm"
    monkeypatch.setenv("TENSOR_UTILS_BACKEND", "grouped_mm")
    ops._reset_override_from_env()
    try:
        assert select(x.device.type, x.dtype) == "grouped_mm"
        assert select(x.device.type, x.dtype, "reference") == "reference"  # the argument wins
    finally:
        monkeypatch.delenv("TENSOR_UTILS_BACKEND")
        ops._reset_override_from_env()
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        select(x.device.type, x.dtype, "bogus")
