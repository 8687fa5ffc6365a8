"""The Triton routing (top-k softmax + stable expert sort in 1-2 launches, ``ops/routing``)
against the PyTorch spec (``jetmoe_model.routing.top_k_route``): same experts, gates, sort and
offsets, the inverse permutation, gate gradients, one and several token blocks, NaN rows.

On the CPU these run in Triton's interpreter (TRITON_INTERPRET=1; 8 tokens per block there).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jetmoe_model.ops.routing import top_k_route as dispatch_route
from jetmoe_model.ops.routing import triton as route_kernels
from jetmoe_model.routing import top_k_route

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.strategies import random_tensor, seeds

pytestmark = pytest.mark.triton


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_route(logits, top_k, gate_dtype=torch.float32):
    with poison_allocations():
        got = route_kernels.top_k_route(logits, top_k, gate_dtype)
    want = top_k_route(logits, top_k, gate_dtype)
    assert torch.equal(got.expert_index, want.expert_index)
    assert got.gates.dtype == gate_dtype
    assert_close(got.gates, want.gates)
    r, w = got.routing, want.routing
    assert torch.equal(r.sorted_pair, w.sorted_pair)
    assert torch.equal(r.expert_offsets, w.expert_offsets)
    # pair_position inverts the sort: sorted row of every pair
    assert r.pair_position is not None
    assert torch.equal(
        r.pair_position[r.sorted_pair].long(), torch.arange(r.num_pairs).to(logits.device)
    )
    return got


@settings(deadline=None, max_examples=15)
@given(
    tokens=st.integers(0, 40),
    experts=st.integers(1, 9),
    data=st.data(),
    scale=st.sampled_from([0.1, 3.0]),
    seed=seeds(),
)
def test_triton_routing_equals_the_spec(tokens, experts, data, scale, seed):
    top_k = data.draw(st.integers(1, experts))
    logits = random_tensor((tokens, experts), torch.float32, seed, scale=scale, device=_device())
    if tokens and experts > 1:
        logits[:, 0] += 2 * scale  # crowd one expert so that others go empty
    check_route(logits, top_k)


def test_gate_gradient_equals_the_spec():
    device = _device()
    logits = torch.randn(19, 6, device=device)
    w = torch.randn(19, 3, device=device)
    grads = []
    for route in (route_kernels.top_k_route, top_k_route):
        lg = logits.clone().requires_grad_()
        out = route(lg, 3, torch.float32)
        # gates and the logits themselves (the aux losses read them) both carry gradient
        loss = (out.gates * w).sum() + torch.logsumexp(out.logits, -1).square().mean()
        grads.append(torch.autograd.grad(loss, [lg])[0])
    assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_nan_and_inf_rows_still_route_every_pair_once():
    device = _device()
    logits = torch.randn(11, 5, device=device)
    logits[2] = float("nan")
    logits[5, 1:] = float("-inf")
    logits[7, 3] = float("nan")
    route = route_kernels.top_k_route(logits, 3, torch.float32)
    idx = route.expert_index
    assert int(idx.min()) >= 0 and int(idx.max()) < 5
    assert all(len(set(row)) == 3 for row in idx.tolist())  # distinct experts per token
    assert torch.equal(route.routing.sorted_pair.sort().values, torch.arange(33, device=device))
    finite = [t for t in range(11) if t not in (2, 5, 7)]
    assert torch.equal(idx[finite], logits[finite].topk(3, -1).indices)


def test_dispatch_checks_and_backends():
    logits = torch.randn(4, 3, device=_device())
    with pytest.raises(ValueError, match="top_k=4 must be between 1 and the number of experts"):
        dispatch_route(logits, 4, torch.float32, backend="triton")
    assert (
        dispatch_route(logits, 2, torch.float32, backend="reference").routing.pair_position is None
    )
    assert (
        dispatch_route(logits, 2, torch.float32, backend="triton").routing.pair_position is not None
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    "tokens", [64, 65, 1024, 8192, 40_000]
)  # block sizes 64..512, 1-2 launches
def test_triton_routing_at_layer_sizes(tokens):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    logits = torch.randn(tokens, 8, device="cuda")
    logits[:, :2] += 1.0  # skewed
    check_route(logits, 2, torch.bfloat16)
