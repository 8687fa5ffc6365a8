"""Routing properties: every token to exactly k distinct experts, gates summing to one, the
expert sort, and the auxiliary losses."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jetmoe_model.routing import (
    load_balancing_loss,
    router_z_loss,
    sort_by_expert,
    top_k_route,
)

from tensor_utils_dev.testing.strategies import random_tensor, seeds


@st.composite
def router_logits(draw):
    tokens = draw(st.integers(0, 40))
    experts = draw(st.integers(1, 12))
    top_k = draw(st.integers(1, experts))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    logits = random_tensor((tokens, experts), torch.float32, draw(seeds()), scale=scale)
    return logits, top_k


@settings(deadline=None)
@given(router_logits(), st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_every_token_goes_to_exactly_k_distinct_experts_with_gates_summing_to_one(case, dtype):
    logits, top_k = case
    tokens, experts = logits.shape
    route = top_k_route(logits, top_k, dtype)
    assert route.expert_index.shape == (tokens, top_k)
    assert route.gates.shape == (tokens, top_k) and route.gates.dtype == dtype
    assert ((route.expert_index >= 0) & (route.expert_index < experts)).all()
    for row in route.expert_index.tolist():
        assert len(set(row)) == top_k
    # the chosen experts are the k largest logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    assert (logits.gather(1, route.expert_index) >= kth).all()
    # gates: softmax over the chosen logits == renormalised full softmax, summing to 1
    full = torch.softmax(logits, -1).gather(1, route.expert_index)
    renorm = full / full.sum(-1, keepdim=True)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(route.gates.float(), renorm, atol=tol, rtol=tol)
    torch.testing.assert_close(
        route.gates.float().sum(-1), torch.ones(tokens), atol=tol * top_k, rtol=0
    )


@settings(deadline=None)
@given(router_logits())
def test_sort_groups_pairs_by_expert_without_losing_any(case):
    logits, top_k = case
    tokens, experts = logits.shape
    route = top_k_route(logits, top_k, torch.float32)
    r = route.routing
    pairs = tokens * top_k
    assert sorted(r.sorted_pair.tolist()) == list(range(pairs))  # a permutation
    assert r.expert_offsets.dtype == torch.int32 and r.expert_offsets.shape == (experts,)
    flat = route.expert_index.reshape(-1)
    counts = torch.bincount(flat, minlength=experts)
    assert r.expert_counts().tolist() == counts.tolist()
    sorted_experts = flat[r.sorted_pair]
    start = 0
    for e, end in enumerate(r.expert_offsets.tolist()):
        assert (sorted_experts[start:end] == e).all()
        assert r.sorted_pair[start:end].tolist() == sorted(r.sorted_pair[start:end].tolist())
        start = end
    assert start == pairs


def test_sort_rejects_a_flat_index():
    import pytest

    with pytest.raises(ValueError, match=r"\[tokens, k\]"):
        sort_by_expert(torch.zeros(5, dtype=torch.long), 4)


def test_top_k_larger_than_experts_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="top_k=5 must be between 1 and the number of experts"):
        top_k_route(torch.zeros(3, 4), 5, torch.float32)


@settings(deadline=None)
@given(router_logits())
def test_load_balancing_loss_is_n_sum_f_p(case):
    logits, top_k = case
    tokens, experts = logits.shape
    if tokens == 0:
        return
    route = top_k_route(logits, top_k, torch.float32)
    f = torch.bincount(route.expert_index.reshape(-1), minlength=experts).float() / (tokens * top_k)
    p = torch.softmax(logits, -1).mean(0)
    expected = experts * (f * p).sum()
    torch.testing.assert_close(load_balancing_loss(logits, route.expert_index), expected)
    z = torch.logsumexp(logits, -1).square().mean()
    torch.testing.assert_close(router_z_loss(logits), z)


def test_perfect_balance_gives_one_and_collapse_gives_n():
    experts, tokens = 4, 8
    uniform = torch.zeros(tokens, experts)
    index = torch.arange(tokens * 2).reshape(tokens, 2) % experts
    assert abs(load_balancing_loss(uniform, index).item() - 1.0) < 1e-6
    collapsed = torch.full((tokens, experts), -30.0)
    collapsed[:, 0] = 30.0
    all_to_zero = torch.zeros(tokens, 1, dtype=torch.long)
    assert abs(load_balancing_loss(collapsed, all_to_zero).item() - experts) < 1e-4


def test_masked_tokens_do_not_count():
    logits = torch.randn(6, 4)
    index = logits.topk(2, -1).indices
    mask = torch.tensor([1, 1, 1, 0, 0, 0])
    lb = load_balancing_loss(logits, index, mask)
    torch.testing.assert_close(lb, load_balancing_loss(logits[:3], index[:3]))
    torch.testing.assert_close(router_z_loss(logits, mask), router_z_loss(logits[:3]))
