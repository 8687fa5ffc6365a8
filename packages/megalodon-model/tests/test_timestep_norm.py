"""Timestep norm: the reference equals its definition at every position (float64), streams in
pieces, handles padding and the prior; the Triton kernel matches it under the interpreter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from megalodon_model.ops.timestep_norm import timestep_norm

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.opcheck import check_backend


def _definition(x, prev_count, prev_mean, prev_var, weight, bias, pad, eps):
    """Position by position: mean/variance over the prior and every valid token so far."""
    batch, length, _dim = x.shape
    groups = prev_mean.shape[1]
    y = torch.zeros_like(x)
    for b in range(batch):
        for t in range(length):
            if pad is not None and pad[b, t]:
                continue
            keep = [i for i in range(t + 1) if pad is None or not pad[b, i]]
            seen = x[b, keep].view(len(keep), groups, -1)  # [n, G, dg]
            n0 = float(prev_count[b])
            n = n0 + len(keep)
            total = n0 * prev_mean[b] + seen.mean(-1).sum(0)
            mean = total / n
            # sum of squares about the mean: the prior's, then every feature's (each token's
            # group weighs 1 token of d_g features)
            ss = n0 * (prev_var[b] + (prev_mean[b] - mean) ** 2)
            ss = ss + ((seen - mean[None, :, None]) ** 2).mean(-1).sum(0)
            var = ss / n
            xg = x[b, t].view(groups, -1)
            y[b, t] = ((xg - mean[:, None]) / torch.sqrt(var[:, None] + eps)).reshape(-1)
    return y * weight + bias


def _case(batch, length, groups, per, seed, prior, padded, dtype=torch.float64, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    dim = groups * per
    x = (torch.randn(batch, length, dim, generator=gen) * 2 + offset).to(dtype)
    if prior:
        count = torch.randint(1, 6, (batch,), generator=gen)
        mean = (torch.randn(batch, groups, generator=gen) + offset).to(dtype)
        var = (torch.rand(batch, groups, generator=gen) + 0.5).to(dtype)
    else:
        count = torch.zeros(batch, dtype=torch.int64)
        mean, var = torch.zeros(batch, groups, dtype=dtype), torch.ones(batch, groups, dtype=dtype)
    weight = (torch.randn(dim, generator=gen) * 0.3 + 1).to(dtype)
    bias = torch.randn(dim, generator=gen).to(dtype)
    pad = None
    if padded:
        pad = torch.rand(batch, length, generator=gen) < 0.25
        pad[:, 0] = False  # without a prior, a leading pad has no statistics to report
    return x, count, mean, var, weight, bias, pad, 1e-5


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(1, 9), groups=st.integers(1, 3), per=st.integers(1, 4),
    seed=st.integers(0, 10_000), prior=st.booleans(), padded=st.booleans(),
)  # fmt: skip
def test_reference_equals_definition_at_every_position(length, groups, per, seed, prior, padded):
    if per == 1 and not prior:
        per = 2  # one value has no variance without a prior (the config refuses it too)
    args = _case(2, length, groups, per, seed, prior, padded)
    y, count, _mean, _var = timestep_norm(*args, backend="reference")
    want = _definition(*args)
    pad = args[6]
    if pad is not None:
        want = torch.where(pad[..., None], torch.zeros_like(want), want)
    assert_close(y, want, atol=1e-9, rtol=1e-8)
    valid = length if pad is None else (~pad).sum(1)
    assert torch.equal(count, args[1] + valid)


@settings(max_examples=15, deadline=None)
@given(length=st.integers(2, 60), cut=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_streamed_pieces_equal_the_whole(length, cut, seed):
    x, count, mean, var, w, b, _, eps = _case(2, length, 3, 4, seed, True, False, torch.float32)
    k = max(1, min(length - 1, int(cut * length)))
    y, *state = timestep_norm(x, count, mean, var, w, b, None, eps)
    y1, *s1 = timestep_norm(x[:, :k], count, mean, var, w, b, None, eps)
    y2, *s2 = timestep_norm(x[:, k:], *s1, w, b, None, eps)
    assert_close(torch.cat([y1, y2], 1), y, atol=2e-5, rtol=2e-5)
    for got, want in zip(s2, state, strict=True):
        assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_large_common_offset_keeps_float32_accuracy():
    args = _case(1, 300, 2, 8, 0, False, False, torch.float64, offset=1e4)
    want = timestep_norm(*args)[0]
    got = timestep_norm(*[a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                          for a in args])[0]  # fmt: skip
    assert (got.double() - want).abs().max() < 5e-3


def test_reference_gradients_match_float64_gradcheck():
    x, count, mean, var, weight, bias, pad, _ = _case(1, 5, 2, 3, 1, True, True)
    leaves = tuple(t.requires_grad_(True) for t in (x, mean, var, weight, bias))
    assert torch.autograd.gradcheck(
        lambda x, m, v, w, b: timestep_norm(x, count, m, v, w, b, pad, 1e-5)[0::2], leaves
    )


@pytest.mark.triton
def test_triton_matches_the_reference_on_the_op_cases(device):
    check_backend(timestep_norm, "triton", max_examples=8, device=device)


@pytest.mark.triton
@pytest.mark.parametrize(("prior", "padded"), [(False, False), (True, True)])
def test_triton_forward_and_backward(device, prior, padded):
    """Multi-chunk (length 21: chunks of 4), 5 features per group (masked tile), poisoned."""
    x, count, mean, var, weight, bias, pad, eps = _case(
        2, 21, 3, 5, 4, prior, padded, torch.float32, offset=2.0
    )
    count, pad = count.to(device), None if pad is None else pad.to(device)
    floats = [t.to(device) for t in (x, mean, var, weight, bias)]

    def run(backend):
        xs, m0, v0, w, b = (t.clone().requires_grad_(True) for t in floats)
        with poison_allocations():
            y, n, mean, var = timestep_norm(xs, count, m0, v0, w, b, pad, eps, backend=backend)
            (y.sin().sum() + mean.cos().sum() + var.sin().sum()).backward()
        return [y, n, mean, var, xs.grad, m0.grad, v0.grad, w.grad, b.grad]

    for got, want in zip(run("triton"), run("reference"), strict=True):
        assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_group_count_that_does_not_divide_the_width_is_one_line():
    x = torch.randn(1, 3, 10)
    with pytest.raises(ValueError, match="3 groups do not divide 10 features"):
        timestep_norm(x, torch.zeros(1, dtype=torch.int64), torch.zeros(1, 3), torch.ones(1, 3),
                      torch.ones(10), torch.zeros(10))  # fmt: skip
