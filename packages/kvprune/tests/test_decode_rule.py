"""Decoding upkeep of a RaggedLayer, driven directly: after every step the live set of every
segment is exactly the rule's greedy eviction, simulated here with plain Python sets."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kvprune import rules
from kvprune.policies import Plan
from kvprune.storage import Arena, RaggedStore


def simulate(tokens, params, n_prompt, kept0, steps, score_mode):
    """The rule written plainly (budgets in force at the current length L)."""
    """tokens: {pos: (cls, score)} of the kept prompt; steps: list of (cls, {pos: weight})."""
    live = {q: [c, s] for q, (c, s) in tokens.items() if q in kept0}
    history = []
    for t, (c_new, weights) in enumerate(steps):
        newest = n_prompt + t
        live[newest] = [c_new, 0.0]
        for q in live:
            w = weights.get(q, 0.0)
            live[q][1] = w if score_mode == "last" else live[q][1] + w
        length = newest + 1
        grown = (params["window_q"] * length >> rules.FRACTION_BITS) - params["n_sink"]
        window = max(params["window"], grown)
        grown_k = (params["k_f_q"] * length >> rules.FRACTION_BITS) - window - params["n_sink"]
        k_f = max(params["k_f"], grown_k)
        while True:
            cand = [
                (s, q)
                for q, (c, s) in live.items()
                if not (
                    (params["level"] >= 1 and c == rules.CLS_SPECIAL)
                    or (params["level"] >= 2 and c == rules.CLS_PUNCT)
                    or q < params["n_sink"]
                    or q >= params["keep_from"]
                    or q > newest - window
                )
            ]
            if len(cand) <= k_f:
                break
            _, victim = min(cand)  # lowest score, then the oldest
            del live[victim]
        history.append(sorted(live))
    return history


@st.composite
def scenarios(draw):
    h = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    steps = draw(st.integers(1, 12))
    segs = []
    for _ in range(h):
        segs.append(
            {
                "level": draw(st.integers(0, 2)),
                "n_sink": draw(st.integers(0, 2)),
                "keep_from": draw(st.sampled_from([rules.UNBOUNDED, n // 2])),
                "window": draw(st.integers(0, 4)),
                "k_f": draw(st.integers(0, 4)),
                "window_q": draw(st.sampled_from([0, rules.fraction_q(0.3)])),
                "k_f_q": draw(st.sampled_from([0, rules.fraction_q(0.25)])),
            }
        )
    return (
        h,
        n,
        steps,
        segs,
        draw(st.integers(0, 2**31 - 1)),
        draw(st.sampled_from(["cumulative", "last"])),
        draw(st.integers(1, 3)),
    )


@settings(max_examples=60, deadline=None)
@given(scenario=scenarios())
def test_decode_eviction_matches_the_rule(scenario):
    h, n, n_steps, segs, seed, score_mode, slack = scenario
    gen = torch.Generator().manual_seed(seed)
    d = 4
    cls = torch.randint(0, 3, (1, n), generator=gen).to(torch.int8)
    pos = torch.arange(n)[None]
    real = torch.ones(1, n, dtype=torch.bool)
    score = torch.randint(0, 8, (1, h, n), generator=gen) / 8  # exact in binary; ties happen
    params = {k: torch.tensor([[s[k] for s in segs]]) for k in rules.PARAM_NAMES}
    keep = rules.prefill_keep(cls, pos, real, torch.tensor([n]), score, params)
    plan = Plan(keep, score, params, torch.zeros(1, h, dtype=torch.long), ("x",), torch.ones(1, h))
    layer = RaggedStore(slack=slack, score_mode=score_mode)
    key = torch.randn(1, h, n, d, generator=gen)
    layer.build(plan, key, key.clone(), cls, pos, torch.tensor([n]))

    steps_cls = torch.randint(0, 3, (n_steps,), generator=gen).tolist()
    expected_hist = []
    for k in range(h):
        tokens = {q: (int(cls[0, q]), float(score[0, k, q])) for q in range(n)}
        kept0 = set(keep[0, k].nonzero().flatten().tolist())
        expected_hist.append((tokens, kept0))
    step_weights = []
    for t in range(n_steps):
        layer.append(torch.randn(1, h, d), torch.randn(1, h, d), torch.tensor([steps_cls[t]]))
        weights = torch.zeros(layer.k_pool.shape[0], 1)
        live = layer.live()
        weights[live, 0] = torch.randint(0, 8, (int(live.sum()),), generator=gen) / 8
        row_pos = layer.row_positions()
        per_seg = []
        for k in range(h):
            off, ln = int(layer.offsets[k]), int(layer.lengths[k])
            assert bool(live[off : off + ln].all())  # the live rows are the first lengths[k]
            per_seg.append({int(row_pos[off + j]): float(weights[off + j, 0]) for j in range(ln)})
        step_weights.append(per_seg)
        layer.after_step(weights)
        for k in range(h):
            tokens, kept0 = expected_hist[k]
            p = {name: int(v[0, k]) for name, v in params.items()}
            steps = [(steps_cls[i], step_weights[i][k]) for i in range(t + 1)]
            want = simulate(tokens, p, n, kept0, steps, score_mode)[-1]
            got = layer.kept_positions(0, k)
            assert got == want, (t, k, p, got, want)
    # The pool never holds more rows than its segments' capacities.
    assert int(layer.lengths.sum()) <= layer.k_pool.shape[0] == int(layer.capacity.sum())


@st.composite
def layered_scenarios(draw):
    """Several layers of one step loop, each with its own per-head parameters."""
    layers = draw(st.integers(2, 4))
    h = draw(st.integers(1, 3))
    n = draw(st.integers(1, 10))
    params = []
    for _ in range(layers):
        segs = []
        for _ in range(h):
            segs.append(
                {
                    "level": draw(st.integers(0, 2)),
                    "n_sink": draw(st.integers(0, 2)),
                    "keep_from": rules.UNBOUNDED,
                    "window": draw(st.integers(0, 3)),
                    "k_f": draw(st.integers(0, 3)),
                    "window_q": draw(st.sampled_from([0, rules.fraction_q(0.3)])),
                    "k_f_q": draw(st.sampled_from([0, rules.fraction_q(0.25)])),
                }
            )
        params.append(segs)
    return (
        h,
        n,
        draw(st.integers(1, 14)),
        params,
        draw(st.integers(0, 2**31 - 1)),
        draw(st.sampled_from(["cumulative", "last"])),
        draw(st.integers(1, 2)),
    )


@settings(max_examples=40, deadline=None)
@given(scenario=layered_scenarios())
def test_batched_eviction_keeps_what_layer_by_layer_eviction_keeps(scenario):
    """The cache evicts for all its layers at once after a step (their metadata in one
    ``Arena``, victims by argmin of a packed key); on random prompts, scores (ties included)
    and tokens, every layer keeps exactly what a store evicting on its own keeps and what the
    rule, written plainly, keeps. Small slack makes segments grow, widening the arena."""
    h, n, n_steps, layer_params, seed, score_mode, slack = scenario
    gen = torch.Generator().manual_seed(seed)
    d = 4
    cls = torch.randint(0, 3, (1, n), generator=gen).to(torch.int8)
    pos = torch.arange(n)[None]
    real = torch.ones(1, n, dtype=torch.bool)
    steps_cls = torch.randint(0, 3, (n_steps,), generator=gen).tolist()
    # the attention each token gets at each step, by position (the layouts differ)
    weight_of = torch.randint(0, 8, (n_steps, n + n_steps), generator=gen) / 8
    batched, alone, expected = [], [], []
    for segs in layer_params:
        score = torch.randint(0, 8, (1, h, n), generator=gen) / 8
        params = {k: torch.tensor([[s[k] for s in segs]]) for k in rules.PARAM_NAMES}
        keep = rules.prefill_keep(cls, pos, real, torch.tensor([n]), score, params)
        plan = Plan(
            keep, score, params, torch.zeros(1, h, dtype=torch.long), ("x",), torch.ones(1, h)
        )
        key = torch.randn(1, h, n, d, generator=gen)
        for group in (batched, alone):
            store = RaggedStore(slack=slack, score_mode=score_mode)
            store.build(plan, key, key.clone(), cls, pos, torch.tensor([n]))
            group.append(store)
        per_head = []
        for k in range(h):
            tokens = {q: (int(cls[0, q]), float(score[0, k, q])) for q in range(n)}
            kept0 = set(keep[0, k].nonzero().flatten().tolist())
            per_head.append((tokens, kept0, {name: int(v[0, k]) for name, v in params.items()}))
        expected.append(per_head)
    arena = Arena(batched)
    for store in batched:
        store.defer = True
    for t in range(n_steps):
        for group in (batched, alone):
            for store in group:
                store.append(
                    torch.randn(1, h, d), torch.randn(1, h, d), torch.tensor([steps_cls[t]])
                )
                row_pos = store.row_positions()
                w = torch.where(row_pos >= 0, weight_of[t][row_pos.clamp(min=0)], 0.0)
                store.after_step(w[:, None])
        assert all(store.pending for store in batched)
        arena.flush()
        for layer, per_head in enumerate(expected):
            for k, (tokens, kept0, p) in enumerate(per_head):
                steps = [
                    (steps_cls[i], {q: float(weight_of[i, q]) for q in range(n + i + 1)})
                    for i in range(t + 1)
                ]
                want = simulate(tokens, p, n, kept0, steps, score_mode)[-1]
                assert batched[layer].kept_positions(0, k) == want, (t, layer, k, p)
                assert alone[layer].kept_positions(0, k) == want, (t, layer, k, p)
    for store in batched:
        assert store.arena is arena
        assert int(store.lengths.sum()) <= store.k_pool.shape[0] == int(store.capacity.sum())


def test_merged_rows_decode_as_each_row_alone():
    """``RaggedStore.merge_rows`` (batching single-request caches) keeps, row by row, what
    each row's own store keeps while decoding."""
    gen = torch.Generator().manual_seed(3)
    h, d, steps = 2, 4, 12
    singles, copies = [], []
    for n in (9, 14):
        cls = torch.randint(0, 3, (1, n), generator=gen).to(torch.int8)
        pos = torch.arange(n)[None]
        score = torch.randint(0, 8, (1, h, n), generator=gen) / 8
        params = rules.make_params((1, h), "cpu", n_sink=1, window=2, k_f=2 + n % 3)
        keep = rules.prefill_keep(
            cls, pos, torch.ones(1, n, dtype=torch.bool), torch.tensor([n]), score, params
        )
        plan = Plan(
            keep, score, params, torch.zeros(1, h, dtype=torch.long), ("x",), torch.ones(1, h)
        )
        key = torch.randn(1, h, n, d, generator=gen)
        for group in (singles, copies):
            store = RaggedStore(slack=1)
            store.build(plan, key, key.clone(), cls, pos, torch.tensor([n]))
            group.append(store)
    merged = RaggedStore.merge_rows(singles)
    weight_of = torch.randint(0, 8, (steps, 40), generator=gen) / 8
    for t in range(steps):
        k_new = torch.randn(2, h, d, generator=gen)
        for store, rows in [
            (merged, slice(0, 2)),
            (copies[0], slice(0, 1)),
            (copies[1], slice(1, 2)),
        ]:
            store.append(k_new[rows], k_new[rows], torch.zeros(2, dtype=torch.int8)[rows])
            row_pos = store.row_positions()
            w = torch.where(row_pos >= 0, weight_of[t][row_pos.clamp(min=0)], 0.0)
            store.after_step(w[:, None])
        for row in range(2):
            for k in range(h):
                assert merged.kept_positions(row, k) == copies[row].kept_positions(0, k)
