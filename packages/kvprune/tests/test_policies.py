"""Profiling and policy planning: FastGen's choice and every policy's kept set follow the rule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kv_helpers import causal_attention, rule_keep_python
from kvprune import H2O, TOVA, AdaptiveFastGen, FastGen, Full, SnapKV, StreamingLLM, rules
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
                        seg = {k: int(v[bi, hi]) for k, v in params.items()}
                        win = rules.window_at(seg, row_pos + 1)
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
    min_window=st.sampled_from([0, 3]),
)
@example(  # sinks and the minimum window together over a small budget
    profile=Profile(
        torch.tensor([[[[[0.4608, 0.1841, 0.0717, 0.2833]]]]]),
        torch.tensor([[True]]),
        torch.ones(1, 4, dtype=torch.bool),
        torch.arange(4)[None],
        torch.zeros(1, 4, dtype=torch.int8),
        torch.tensor([4]),
    ),
    f=0.5,
    which="streaming",
    min_window=3,
)
@example(  # a fraction whose budget is a whole number of tokens (2/3 of 6)
    profile=Profile(
        torch.tensor([[[[[0.3746, 0.1497, 0.0583, 0.2304, 0.1008, 0.0862]]]]]),
        torch.tensor([[True]]),
        torch.ones(1, 6, dtype=torch.bool),
        torch.arange(6)[None],
        torch.zeros(1, 6, dtype=torch.int8),
        torch.tensor([6]),
    ),
    f=0.6666666716337204,
    which="streaming",
    min_window=0,
)
def test_baseline_kept_sets_are_their_rule(profile, f, which, min_window):
    """Every baseline keeps its rule's set, and exactly its budget: ``floor(f * n)`` tokens per
    head, or the minimum window where that is larger."""
    mw = min_window
    policy = {
        "streaming": StreamingLLM(kept_fraction=f, sinks=2, min_window=mw),
        "h2o": H2O(kept_fraction=f, min_window=mw),
        "tova": TOVA(kept_fraction=f, min_window=mw),
        "snapkv": SnapKV(kept_fraction=f, window=4, kernel=3, min_window=mw),
        "full": Full(),
    }[which]
    plan = policy.plan(profile)
    check_rule(profile, plan)
    kept = plan.keep.sum(-1)
    budget = rules.budgets(f, profile.n_real)[:, None]
    if which == "full":
        assert bool((kept == profile.n_real[:, None]).all())
    else:  # uniform budgets: exactly floor(f * n) tokens per head (the floor where larger)
        floor = torch.minimum(profile.n_real[:, None], torch.tensor(min_window))
        assert bool((kept == torch.maximum(budget, floor)).all()), (kept, budget, floor)


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
    plan = SnapKV(kept_fraction=0.5, window=3, kernel=3, min_window=0).plan(profile)
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


@settings(max_examples=40, deadline=None)
@given(
    profile=profiles(),
    f=st.floats(0.05, 1.0),
    alpha=st.sampled_from([0.0, 0.2, 1.0]),
    structural=st.sampled_from([0.3, 0.98, 1.0]),
    min_window=st.sampled_from([0, 2]),
    recent_share=st.sampled_from([0.0, 0.5, 1.0]),
    prompt_share=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_adaptive_fastgen_keeps_its_rule_and_exactly_its_budget(
    profile, f, alpha, structural, min_window, recent_share, prompt_share
):
    policy = AdaptiveFastGen(
        kept_fraction=f,
        window=3,
        kernel=3,
        alpha=alpha,
        structural_recovery=structural,
        min_window=min_window,
        sinks=1,
        recent_share=recent_share,
        prompt_share=prompt_share,
    )
    plan = policy.plan(profile)
    check_rule(profile, plan)  # kept set == protected | top-k_f(votes) per head
    b, h = profile.shape
    structural_heads = plan.policy == 0
    # Structural heads pass the recovery test and keep no heavy hitters.
    assert bool((plan.recovery[structural_heads] >= structural - 1e-5).all())
    assert bool((plan.params["k_f"][structural_heads] == 0).all())
    # The layer keeps exactly its budget: floor(f * n) * heads, unless what the rule protects
    # alone is larger, or there are not enough candidates.
    for i in range(b):
        n = int(profile.n_real[i])
        total = math.floor(f * n + 1e-9) * h
        p_zero = {k: v.clone() for k, v in plan.params.items()}
        p_zero["k_f"] = torch.zeros_like(p_zero["k_f"])
        protected = rules.prefill_keep(
            profile.cls, profile.pos, profile.real, profile.n_real, plan.score, p_zero
        )[i]
        kept = int(plan.keep[i].sum())
        n_prot = int(protected.sum())
        cand = int((profile.real[i][None] & ~protected)[~structural_heads[i]].sum())
        assert kept == n_prot + min(max(0, total - n_prot), cand), (kept, n_prot, total, cand)
        # Ada-KV floor: every non-structural head gets at least its safeguard share.
        share = math.floor(max(0, total - n_prot) * alpha / h)
        for k in range(h):
            if not structural_heads[i, k]:
                n_cand = int((profile.real[i] & ~protected[k]).sum())
                assert int(plan.params["k_f"][i, k]) >= min(share, n_cand)


def _uniform_profile(attn: torch.Tensor) -> Profile:
    b, _h, _g, r, n = attn.shape
    return Profile(
        attn,
        torch.ones(b, r, dtype=torch.bool),
        torch.ones(b, n, dtype=torch.bool),
        torch.arange(n).expand(b, n),
        torch.zeros(b, n, dtype=torch.int8),
        torch.full((b,), n),
    )


def _bare(
    kept_fraction: float,
    *,
    alpha: float = 0.2,
    prompt_share: float = 0.0,
    recent_share: float = 0.0,
) -> AdaptiveFastGen:
    """``AdaptiveFastGen`` with nothing protected but its observation window (2 rows), unpooled
    votes and no structural heads: what a hand-made profile's expectations need."""
    return AdaptiveFastGen(
        kept_fraction=kept_fraction,
        alpha=alpha,
        prompt_share=prompt_share,
        recent_share=recent_share,
        window=2,
        kernel=1,
        min_window=0,
        sinks=0,
        structural_recovery=1.0,
    )


def test_adaptive_fastgen_gives_the_budget_to_the_highest_votes_across_heads():
    """Ada-KV: with no floor, the heavy hitters are the top votes of all heads together."""
    n, h = 20, 2
    attn = torch.zeros(1, h, 1, 2, n)
    attn[0, 0, 0, :, 2] = 1.0  # head 0: all votes on one token
    attn[0, 1, 0, :, 1:9] = 0.125  # head 1: votes spread over eight tokens
    profile = _uniform_profile(attn)
    policy = _bare(0.35, alpha=0.0)
    plan = policy.plan(profile)
    # 7 entries per head = 14; the window (2 per head) protects 4; 10 heavy hitters: head 0's
    # one voted token, then head 1's eight (all equal), then one zero-vote token of either.
    k_f = plan.params["k_f"][0].tolist()
    assert sum(k_f) == 10 and k_f[1] >= 8 and k_f[0] >= 1
    assert bool(plan.keep[0, 1, 1:9].all()) and bool(plan.keep[0, 0, 2])


def test_adaptive_fastgen_prompt_share_mixes_window_votes_with_whole_prompt_attention():
    """``prompt_share`` ranks by each head's normalised observation votes mixed with its
    normalised attention accumulated over every profiled row; 0 uses the window alone."""
    n = 30
    attn = torch.zeros(1, 1, 1, 10, n)
    attn[0, 0, 0, :8, 3] = 1.0  # early rows: all on token 3
    attn[0, 0, 0, 8:, 5] = 1.0  # the observation window (2 rows): all on token 5
    profile = _uniform_profile(attn)

    only_window = _bare(3 / n).plan(profile)
    # 3 kept: the 2-token window + one heavy hitter: the window's choice
    assert bool(only_window.keep[0, 0, 5]) and not bool(only_window.keep[0, 0, 3])
    whole = _bare(3 / n, prompt_share=0.9)
    assert whole.profile_window == whole.prompt_rows
    plan = whole.plan(profile)
    assert bool(plan.keep[0, 0, 3]) and not bool(plan.keep[0, 0, 5])
    expected = 0.1 * torch.tensor([0.0] * 5 + [1.0] + [0.0] * 24) + 0.9 * attn[0, 0, 0].sum(0) / 10
    torch.testing.assert_close(plan.score[0, 0], expected)


def test_adaptive_fastgen_recent_share_protects_the_newest_share_of_the_budget():
    n = 40
    attn = torch.zeros(1, 1, 1, 2, n)
    attn[0, 0, 0, :, 0:4] = 0.25  # votes on the first tokens only
    profile = _uniform_profile(attn)
    plan = _bare(0.5, recent_share=0.5).plan(profile)
    assert int(plan.keep[0, 0].sum()) == 20
    assert bool(plan.keep[0, 0, 30:].all())  # the newest 10 = half of the 20-entry budget
    assert bool(plan.keep[0, 0, 0:4].all())  # the voted tokens


@settings(max_examples=25, deadline=None)
@given(profile=profiles(), f=st.floats(0.05, 1.0))
def test_fastgen_kept_fraction_fits_the_budget_with_the_highest_threshold(profile, f):
    """``FastGen(kept_fraction=f)``: the paper's ladder and test at the highest threshold whose
    kept set fits ``f`` of the layer (the cheapest rungs when none does)."""
    policy = FastGen(kept_fraction=f, profile_window=10**6, min_window=0)
    plan = policy.plan(profile)
    check_rule(profile, plan)
    _score, rungs = policy.rungs(profile)
    b, h = profile.shape

    def cost(i, t):  # kept entries of row i when every head takes the first rung passing t
        total = 0
        for k in range(h):
            j = next(
                j for j, (_, _, r) in enumerate(rungs) if float(r[i, k]) >= t or j == len(rungs) - 1
            )
            total += int(rungs[j][0][i, k].sum())
        return total

    for i in range(b):
        budget = math.floor(f * int(profile.n_real[i]) + 1e-9) * h
        kept = int(plan.keep[i].sum())
        assert kept == cost(i, float(policy.threshold_for_budget(profile, rungs)[i]))
        assert kept <= budget or kept == cost(i, 0.0)
        for t in {float(r[i, k]) for _, _, r in rungs for k in range(h)}:
            if cost(i, t) <= budget:  # every fitting threshold keeps no more than the chosen
                assert cost(i, t) <= kept
