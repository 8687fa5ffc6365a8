"""TOVA as the paper defines it: the current query's attention averaged over every query head
of the layer decides, so every KV head of a layer keeps the same tokens (prompt and decoding)."""

from __future__ import annotations

import torch
from kv_helpers import tiny_model, token_table
from kvprune import TOVA, KVPruneCache
from kvprune.generate import cache_kwarg
from kvprune.policies import Profile


def test_tova_ranks_by_the_layer_mean_of_the_last_row():
    """Two KV heads of two query heads each: the group sums rank token 1 first for head 0 and
    token 2 first for head 1, the layer mean ranks token 2 first for both."""
    n = 6
    attn = torch.zeros(1, 2, 2, 1, n)
    attn[0, 0, :, 0, 1] = 0.30  # KV head 0's queries: token 1
    attn[0, 0, :, 0, 2] = 0.20
    attn[0, 1, :, 0, 2] = 0.50  # KV head 1's queries: token 2
    attn[0, :, :, 0, 5] = 1.0 - attn[0, :, :, 0].sum(-1)
    profile = Profile(
        attn,
        torch.ones(1, 1, dtype=torch.bool),
        torch.ones(1, n, dtype=torch.bool),
        torch.arange(n)[None],
        torch.zeros(1, n, dtype=torch.int8),
        torch.tensor([n]),
    )
    plan = TOVA(kept_fraction=2 / n + 1e-6, min_window=1).plan(profile)  # token 5 + one more
    assert plan.keep[0, 0].nonzero().flatten().tolist() == [2, 5]
    assert plan.keep[0, 1].nonzero().flatten().tolist() == [2, 5]


def test_tova_keeps_one_set_per_layer_while_decoding():
    model = tiny_model("llama", layers=2)  # 2 KV heads of 3 query heads each
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 101, (2, 40), generator=gen)
    cache = KVPruneCache(
        model, TOVA(kept_fraction=0.4, min_window=2), token_classes_table=token_table()
    )
    with torch.no_grad():
        out = model(ids, **{cache_kwarg(model): cache})
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        for step in range(6):
            for layer in cache.layers:
                for row in range(2):
                    sets = [layer.kept_positions(row, h) for h in range(layer.store.n_kv)]
                    assert all(s == sets[0] for s in sets), (step, layer.layer_idx, row)
                    assert len(sets[0]) < 40 + step  # something was evicted
            out = model(tok, **{cache_kwarg(model): cache})
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
