"""A kvprune decode step on CUDA: no host synchronization, and it captures in a CUDA graph."""

from __future__ import annotations

import pytest
import torch
from kv_helpers import tiny_model, token_table
from kvprune import H2O, AdaptiveFastGen, HybridFastGen, KVPruneCache, StreamingLLM

pytestmark = pytest.mark.gpu

POLICIES = [
    H2O(kept_fraction=0.5, min_window=4),  # scores + eviction every step
    StreamingLLM(kept_fraction=0.5, min_window=4),  # eviction without scores
    AdaptiveFastGen(kept_fraction=0.5, window=8, min_window=4),  # keeps every new token
    HybridFastGen(kept_fraction=0.5, window=8, min_window=4, prompt_rows=32),
]


def _setup(policy, steps: int):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny_model("llama", layers=2, heads=8, kv_heads=2, head_dim=64).cuda()
    model = model.to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 101, (2, 48), generator=gen).cuda()
    caches = [
        KVPruneCache(model, policy, token_classes_table=token_table(), reserve=steps)
        for _ in range(2)
    ]
    with torch.no_grad():
        for cache in caches:
            model(ids, cache=cache)
    return model, caches


def _step(model, cache, tok, pos):
    return model(tok, cache=cache, position_ids=pos).logits


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: type(p).__name__)
def test_decode_step_has_no_host_sync(policy):
    model, (cache, _) = _setup(policy, steps=8)
    tok = torch.full((2, 1), 5, device="cuda")
    pos = torch.full((2, 1), 48, device="cuda")
    with torch.no_grad():
        _step(model, cache, tok, pos)  # warm-up: kernels compile
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for t in range(1, 6):
                tok.fill_(5 + t)
                pos.fill_(48 + t)
                _step(model, cache, tok, pos)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: type(p).__name__)
def test_decode_step_captures_in_a_cuda_graph(policy):
    """Capture one decode step on cache A; replaying it step after step gives the logits of
    eager steps on cache B (same prompt, same tokens), evictions included."""
    model, (graphed, eager) = _setup(policy, steps=16)
    tok = torch.full((2, 1), 5, device="cuda")
    pos = torch.full((2, 1), 48, device="cuda")
    with torch.no_grad():
        # warm-up on a side stream, one step on each cache (same input, same state after)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            first = [_step(model, c, tok, pos) for c in (graphed, eager)]
        torch.cuda.current_stream().wait_stream(side)
        torch.testing.assert_close(first[0], first[1])
        tok.fill_(6)
        pos.fill_(49)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = _step(model, graphed, tok, pos)
        for t in range(1, 9):
            tok.fill_(5 + t)
            pos.fill_(48 + t)
            graph.replay()
            want = _step(model, eager, tok, pos)
            torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)
        for a, b in zip(graphed.layers, eager.layers, strict=True):
            assert torch.equal(a.store.lengths, b.store.lengths)
