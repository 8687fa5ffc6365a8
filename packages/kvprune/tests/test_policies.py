"""Profiling and policy planning: FastGen's choice and every policy's kept set follow the rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kv_helpers import causal_attention, rule_keep_python
from kvprune import H2O, TOVA, FastGen, Full, SnapKV, StreamingLLM, rules
from kvprune.policies import Profile, kept_mass


@st.composite
def profiles(draw, max_n: int = 40):
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 3))
    g = draw(st.integers(1, 3))
    n = draw(st.integers(1, max_n))
    r = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    pads = [draw(st.integers(0, n - 1)) for _ in range(b)]
    real = torch.stack([torch.arange(n) >= p for p in pads])
    pos = torch.where(real, real.long().cumsum(-1) - 1, torch.full((b, n), -1))
    cls = torch.randint(0, 3, (b, n), generator=gen, dtype=torch.int8)
    cls = torch.where(torch.rand(b, n, generator=gen) < 0.6, torch.zeros_like(cls), cls)
    temp = draw(st.sampled_from([0.5, 2.0, 6.0]))
    attn = torch.stack(
        [causal_attention(r, n, h * g, seed + i, real[i], temp).view(h, g, r, n) for i in range(b)]
    )
    row_valid = real[:, n - r :]
    attn = attn * row_valid[:, None, None, :, None]
    return Profile(attn, row_valid, real, pos, cls, real.sum(-1))


def check_rule(profile: Profile, plan) -> None:
    b, h = profile.shape
    for i in range(b):
        for k in range(h):
            p = {name: int(v[i, k]) for name, v in plan.params.items()}
            expected = rule_keep_python(
                profile.cls[i].tolist(),
                profile.pos[i].tolist(),
                plan.score[i, k].tolist(),
                int(profile.n_real[i]),
                p,
            )
            got = set(plan.keep[i, k].nonzero().flatten().tolist())
            assert got == expected, (i, k, p)


@settings(max_examples=60, deadline=None)
@given(
    profile=profiles(),
    t=st.floats(0.05, 1.0),
    reduce=st.sampled_from(["min", "mean"]),
    recovery_rows=st.sampled_from([None, 1, 3]),
)
def test_fastgen_keeps_at_least_t_and_picks_the_cheapest_rung(profile, t, reduce, recovery_rows):
    policy = FastGen(
        recovery=t, group_reduce=reduce, profile_window=10**6, recovery_rows=recovery_rows
    )
    plan = policy.plan(profile)
    b, h = profile.shape
    check_rule(profile, plan)
    for i, rung in enumerate(policy.ladder):
        params = policy.rung_params(rung, profile.n_real, h)
        keep = rules.prefill_keep(
            profile.cls, profile.pos, profile.real, profile.n_real, plan.score, params
        )
        static = keep & ~rules.in_window(
            profile.pos[:, None, :],
            (profile.n_real - 1)[:, None, None],
            {k: v[..., None] for k, v in params.items()},
        )
        # Recompute the recovery by a loop over rows: kept mass with the window sliding per row.
        for bi in range(b):
            for hi in range(h):
                masses = []
                for g in range(profile.attn.shape[2]):
                    rows = []
                    n_rows = profile.attn.shape[3]
                    for r in range(n_rows):
                        if not profile.row_valid[bi, r]:
                            continue
                        if recovery_rows is not None and r < n_rows - recovery_rows:
                            continue  # the test judges only the last recovery_rows rows
                        n = profile.attn.shape[-1]
                        row_pos = int(profile.pos[bi, n - profile.attn.shape[3] + r])
                        win = int(params["window"][bi, hi])
                        kept = [
                            j
                            for j in range(n)
                            if static[bi, hi, j] or int(profile.pos[bi, j]) > row_pos - win
                        ]
                        rows.append(float(profile.attn[bi, hi, g, r, kept].sum()))
                    masses.append(sum(rows) / max(1, len(rows)))
                rec = min(masses) if reduce == "min" else sum(masses) / len(masses)
                chosen = int(plan.policy[bi, hi])
                if i == chosen:
                    assert abs(rec - float(plan.recovery[bi, hi])) < 1e-4
                    assert rec >= t - 1e-5 or "full" in rung
                if i < chosen:  # every cheaper rung failed T
                    assert rec < t + 1e-5
    full = torch.tensor([policy.names.index("full")])
    assert bool(((plan.recovery >= t - 1e-5) | (plan.policy == full)).all())


@settings(max_examples=40, deadline=None)
@given(
    profile=profiles(),
    f=st.floats(0.05, 1.0),
    which=st.sampled_from(["streaming", "h2o", "tova", "snapkv", "full"]),
)
def test_baseline_kept_sets_are_their_rule(profile, f, which):
    policy = {
        "streaming": StreamingLLM(kept_fraction=f, sinks=2),
        "h2o": H2O(kept_fraction=f),
        "tova": TOVA(kept_fraction=f),
        "snapkv": SnapKV(kept_fraction=f, window=4, kernel=3),
        "full": Full(),
    }[which]
    plan = policy.plan(profile)
    check_rule(profile, plan)
    kept = plan.keep.sum(-1)
    budget = rules.budgets(f, profile.n_real)[:, None]
    if which == "full":
        assert bool((kept == profile.n_real[:, None]).all())
    else:  # uniform budgets: exactly floor(f * n) tokens per head
        assert bool((kept == budget).all()), (kept, budget)


def test_snapkv_votes_are_pooled_and_window_kept():
    n = 12
    attn = torch.zeros(1, 1, 1, 3, n)
    attn[..., 2] = 1.0  # all rows vote for token 2; pooling spreads the vote to 1 and 3
    real = torch.ones(1, n, dtype=torch.bool)
    profile = Profile(
        attn,
        torch.ones(1, 3, dtype=torch.bool),
        real,
        torch.arange(n)[None],
        torch.zeros(1, n, dtype=torch.int8),
        torch.tensor([n]),
    )
    plan = SnapKV(kept_fraction=0.5, window=3, kernel=3).plan(profile)
    kept = plan.keep[0, 0].nonzero().flatten().tolist()
    assert kept == [1, 2, 3, 9, 10, 11]


def test_kept_mass_without_params_is_plain_mass():
    attn = torch.tensor([[[[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]]]])
    profile = Profile(
        attn,
        torch.ones(1, 2, dtype=torch.bool),
        torch.ones(1, 3, dtype=torch.bool),
        torch.arange(3)[None],
        torch.zeros(1, 3, dtype=torch.int8),
        torch.tensor([3]),
    )
    keep = torch.tensor([[[True, False, True]]])
    assert torch.allclose(kept_mass(profile, keep), torch.tensor([[[(0.75 + 0.8) / 2]]]))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan")])
def test_recovery_threshold_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"T must be in \(0, 1\]"):
        FastGen(recovery=bad)


def test_bad_policy_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown FastGen policy components"):
        FastGen(ladder=(("special", "nope"),))
    with pytest.raises(ValueError, match="frequent_ratio"):
        FastGen(frequent_ratio=1.5)
    with pytest.raises(ValueError, match="recovery_rows"):
        FastGen(recovery_rows=0)
    with pytest.raises(ValueError, match="kept_fraction"):
        H2O(kept_fraction=0.0)
