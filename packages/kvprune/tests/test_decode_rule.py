"""Decoding upkeep of a RaggedLayer, driven directly: after every step the live set of every
segment is exactly the rule's greedy eviction, simulated here with plain Python sets."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kvprune import rules
from kvprune.policies import Plan
from kvprune.storage import RaggedStore


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
        per_seg = []
        for k in range(h):
            off, ln = int(layer.offsets[k]), int(layer.lengths[k])
            per_seg.append(
                {int(layer.slot_pos[off + j]): float(weights[off + j, 0]) for j in range(ln)}
            )
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
