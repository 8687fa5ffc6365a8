"""Advantages, returns, GAE, KL and the losses equal hand-computed values on small cases."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from perl_rlhf import rl

M = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # second response is 2 tokens long


def test_kl_estimators_by_hand():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    assert torch.allclose(rl.kl_per_token(logp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    # k3 = exp(ref - logp) - (ref - logp) - 1
    want = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert torch.allclose(rl.kl_per_token(logp, ref, "k3"), torch.tensor([want]))


def test_token_rewards_token_and_sequence_kl():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.2, 9.0]]) * M
    scores = torch.tensor([1.0, -2.0])
    tok = rl.token_rewards(scores, kl, M, beta=0.5, kl_mode="token", reward_weight=0.5)
    want = torch.tensor([[-0.05, -0.1, -0.15 + 0.5], [-0.2, 0.1 - 1.0, 0.0]])
    assert torch.allclose(tok, want)
    seq = rl.token_rewards(scores, kl, M, beta=0.5, kl_mode="sequence", reward_weight=0.5)
    want = torch.tensor([[0.0, 0.0, 0.5 - 0.3], [0.0, -1.0 - 0.1, 0.0]])
    assert torch.allclose(seq, want)
    # The two modes carry the same total per sequence.
    assert torch.allclose(tok.sum(1), seq.sum(1))


def test_returns_to_go_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]])
    got = rl.returns_to_go(r, M, gamma=0.5)
    want = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], [4 + 0.5 * 5, 5.0, 0.0]])
    assert torch.allclose(got, want)


def test_rloo_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 4.0])
    got = rl.rloo_advantages(r, 3)
    want = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 4.0, 4 - 2.0, 4 - 2.0])
    assert torch.allclose(got, want)
    with pytest.raises(ValueError):
        rl.rloo_advantages(r, 1)


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=12), st.integers(2, 4))
def test_rloo_advantages_are_k_over_k_minus_1_times_centered(values, k):
    n = (len(values) // k) * k
    if n == 0:
        return
    r = torch.tensor(values[:n], dtype=torch.float64)
    got = rl.rloo_advantages(r, k).view(-1, k)
    g = r.view(-1, k)
    want = (g - g.mean(-1, keepdim=True)) * k / (k - 1)
    assert torch.allclose(got, want, atol=1e-9)


def test_gae_by_hand():
    r = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    v = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.3, 9.0]])
    g, lam = 0.9, 0.8
    adv, ret = rl.gae(r, v, M, gamma=g, lam=lam)
    # Row 0: deltas d2 = 1 - 0.4, d1 = 0 + g*0.4 - 0.2, d0 = 0 + g*0.2 - 0.5
    d2, d1, d0 = 0.6, g * 0.4 - 0.2, g * 0.2 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    # Row 1 ends after 2 tokens: d1 = 2 - 0.3, d0 = g*0.3 - 1.0
    b1 = 2 - 0.3
    b0 = (g * 0.3 - 1.0) + g * lam * b1
    want = torch.tensor([[a0, a1, a2], [b0, b1, 0.0]])
    assert torch.allclose(adv, want)
    assert torch.allclose(ret, (want + v) * M)


@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_gae_with_lambda_one_is_returns_minus_values(t, seed):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(3, t, generator=g), torch.randn(3, t, generator=g)
    lengths = torch.randint(1, t + 1, (3,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    adv, _ = rl.gae(r * mask, v, mask, gamma=1.0, lam=1.0)
    want = (rl.returns_to_go(r * mask, mask) - v) * mask
    assert torch.allclose(adv, want, atol=1e-5)


def test_whiten():
    x = torch.tensor([1.0, 2.0, 3.0, 6.0])
    w = rl.whiten(x)
    assert torch.allclose(w.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(w.std(), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(rl.whiten(x, shift_mean=False).mean(), x.mean(), atol=1e-6)
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mw = rl.masked_whiten(torch.tensor([[1.0, 3.0, 100.0], [2.0, -50.0, 7.0]]), m)
    assert torch.allclose(mw, torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), atol=1e-4)


def test_ppo_clip_loss_by_hand():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3)
    loss, frac = rl.ppo_clip_loss(logp, old, adv, mask, clip=0.2, n_tokens=3.0)
    # min(1.5*1, 1.2*1) = 1.2; min(0.5*-1, 0.8*-1) = -0.8; min(2.2, 2.2) = 2.2
    assert torch.allclose(loss, torch.tensor(-(1.2 - 0.8 + 2.2) / 3))
    assert torch.allclose(frac, torch.tensor(2 / 3))


def test_reinforce_and_value_losses_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 1.0, 5.0]])
    loss = rl.reinforce_loss(logp, adv, M, n_sequences=4.0)
    assert torch.allclose(loss, torch.tensor(-((-1 - 4 - 9) + (0.5 - 0.5)) / 4))
    loss.backward()
    assert logp.grad is not None
    assert torch.allclose(logp.grad, -adv * M / 4)
    v = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    ret = torch.tensor([[0.0, 2.0, 5.0], [1.0, -1.0, 3.0]])
    assert torch.allclose(rl.value_loss(v, ret, M, n_tokens=5.0), torch.tensor(0.5 * 7 / 5))
    old = torch.tensor([[0.0, 2.0, 2.9], [0.0, 0.0, 0.0]])
    # clipped: row0 t0: v_clip = 0 + clamp(1, -.2, .2) = 0.2 -> (0.2-0)^2 = 0.04 < 1 -> max 1
    # t2: v_clip = 2.9 + 0.1 = 3.0 -> same as unclipped. Row 1 unchanged.
    got = rl.value_loss(v, ret, M, n_tokens=5.0, old_values=old, clip=0.2)
    assert torch.allclose(got, torch.tensor(0.5 * 7 / 5))
