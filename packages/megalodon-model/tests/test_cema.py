"""CEMA: every path against the sequential recurrence (itself checked in float64), pieces with a
carried state, the single-step update, the Triton kernel under the interpreter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from megalodon_model.ops.cema import cases, cema, naive
from megalodon_model.ops.cema_step import cema_step

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.opcheck import check_backend

PYTORCH_PATHS = ("chunked", "fft")


def _inputs(batch, length, dim, n_dim, seed, dtype=torch.float32, with_state=True):
    gen = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(batch, length, dim, generator=gen).to(dtype)
    p, q, eta = cases.random_coefficients(dim, n_dim, seed)
    h0 = torch.randn(batch, dim, n_dim, 2, generator=gen) if with_state else None
    return x, p, q, eta, h0


def _direct_float64(x, p, q, eta, h0):
    """The closed form y_t = Re(sum_n eta (sum_s q^(t-s) p x_s + q^(t+1) h0)) in complex128."""
    x = x.double()
    qc = torch.complex(q[..., 0].double(), q[..., 1].double())
    etac = torch.complex(eta[..., 0].double(), eta[..., 1].double())
    length = x.shape[1]
    t = torch.arange(length, dtype=torch.float64)
    lag = t[:, None] - t[None, :]
    powers = qc[..., None, None] ** lag.clamp_min(0) * (lag >= 0)  # [D, N, L, L]
    h = torch.einsum("dnts,bsd->btdn", powers, x.to(torch.complex128)) * p.double()[None, None]
    if h0 is not None:
        h0c = torch.complex(h0[..., 0].double(), h0[..., 1].double())
        h = h + qc[None, None] ** (t[None, :, None, None] + 1) * h0c[:, None]
    return (etac * h).real.sum(-1), h[:, -1]


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(1, 23), dim=st.integers(1, 5), n_dim=st.integers(1, 4),
    seed=st.integers(0, 10_000), with_state=st.booleans(),
)  # fmt: skip
def test_reference_matches_closed_form_in_float64(length, dim, n_dim, seed, with_state):
    x, p, q, eta, h0 = _inputs(2, length, dim, n_dim, seed, torch.float64, with_state)
    h0 = h0.double() if h0 is not None else None
    y, h = naive.cema(x, p.double(), q.double(), eta.double(), h0)
    y_ref, h_ref = _direct_float64(x, p, q, eta, h0)
    assert_close(y, y_ref, atol=1e-10, rtol=1e-9)
    assert_close(torch.view_as_complex(h), h_ref, atol=1e-10, rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    length=st.integers(1, 150), dim=st.integers(1, 6), n_dim=st.integers(1, 5),
    seed=st.integers(0, 10_000), with_state=st.booleans(), path=st.sampled_from(PYTORCH_PATHS),
)  # fmt: skip
def test_paths_agree_with_the_recurrence(length, dim, n_dim, seed, with_state, path):
    """Odd lengths included: chunk remainders and FFT sizes that are not powers of two."""
    args = _inputs(2, length, dim, n_dim, seed, with_state=with_state)
    y, h = cema(*args, backend=path)
    y_ref, h_ref = cema(*args, backend="reference")
    scale = max(1.0, float(y_ref.abs().max()))
    assert_close(y, y_ref, atol=1e-5 * scale, rtol=1e-4)
    assert_close(h, h_ref, atol=1e-5 * max(1.0, float(h_ref.abs().max())), rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(
    length=st.integers(2, 140), cut=st.floats(0.01, 0.99), seed=st.integers(0, 10_000),
    path=st.sampled_from(("reference", *PYTORCH_PATHS)),
)  # fmt: skip
def test_pieces_with_carried_state_equal_the_whole(length, cut, seed, path):
    x, p, q, eta, h0 = _inputs(2, length, 5, 3, seed)
    k = max(1, min(length - 1, int(cut * length)))
    y_whole, h_whole = cema(x, p, q, eta, h0, backend=path)
    y1, h1 = cema(x[:, :k], p, q, eta, h0, backend=path)
    y2, h2 = cema(x[:, k:], p, q, eta, h1, backend=path)
    assert_close(torch.cat([y1, y2], 1), y_whole, atol=2e-5, rtol=1e-4)
    assert_close(h2, h_whole, atol=2e-5, rtol=1e-4)


def test_single_steps_equal_the_whole():
    x, p, q, eta, h0 = _inputs(2, 19, 6, 4, 3)
    assert h0 is not None
    y_whole, h_whole = cema(x, p, q, eta, h0)
    h, ys = h0, []
    for t in range(x.shape[1]):
        y, h = cema_step(x[:, t], p, q, eta, h)
        ys.append(y)
    assert_close(torch.stack(ys, 1), y_whole, atol=2e-5, rtol=1e-4)
    assert_close(h, h_whole, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("path", PYTORCH_PATHS)
def test_gradients_agree_with_the_recurrence(path):
    args = [t.double() for t in _inputs(2, 70, 4, 3, 11) if t is not None]

    def grads(backend):
        leaves = [a.clone().requires_grad_(True) for a in args]
        y, h = cema(*leaves, backend=backend)
        (y.sin().sum() + h.cos().sum()).backward()
        return [leaf.grad for leaf in leaves]

    for got, want in zip(grads(path), grads("reference"), strict=True):
        assert got is not None and want is not None
        assert_close(got, want, atol=1e-9, rtol=1e-8)


def test_gradcheck_reference_in_float64():
    x, p, q, eta, h0 = (
        t.double().requires_grad_(True) for t in _inputs(1, 6, 2, 2, 5) if t is not None
    )
    assert torch.autograd.gradcheck(lambda *a: naive.cema(*a), (x, p, q, eta, h0))


@pytest.mark.triton
def test_triton_matches_the_reference_on_the_op_cases(device):
    check_backend(cema, "triton", max_examples=8, device=device)


@pytest.mark.triton
@pytest.mark.parametrize("length", [1, 7, 37])
@pytest.mark.parametrize("with_state", [False, True])
def test_triton_forward_and_backward(device, length, with_state):
    """Multi-chunk lengths (chunks of 4 here), N padded to the block, NaN-poisoned buffers."""
    args = [
        t.to(device) if t is not None else None
        for t in _inputs(2, length, 5, 3, length, with_state=with_state)
    ]

    def run(backend):
        leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
        with poison_allocations():
            y, h = cema(*leaves, backend=backend)
            (y.sin().sum() + h.cos().sum()).backward()
        return [y, h] + [leaf.grad for leaf in leaves if leaf is not None]

    for got, want in zip(run("triton"), run("reference"), strict=True):
        assert_close(got, want, atol=2e-5 * max(1.0, float(want.detach().abs().max())), rtol=1e-4)


@pytest.mark.triton
def test_triton_refuses_float64_with_one_line(device):
    x, p, q, eta, _ = _inputs(1, 4, 2, 2, 0, torch.float64)
    with pytest.raises((TypeError, RuntimeError), match="float64"):
        cema(x.to(device), p.to(device), q.to(device), eta.to(device), backend="triton")


def test_fft_paths_report_their_state_shape_for_empty_sequences():
    x, p, q, eta, h0 = _inputs(2, 0, 3, 2, 0)
    for path in ("reference", *PYTORCH_PATHS):
        y, h = cema(x, p, q, eta, h0, backend=path)
        assert y.shape == (2, 0, 3) and h.shape == (2, 3, 2, 2)


@pytest.mark.parametrize("path", ("reference", *PYTORCH_PATHS))
def test_mismatched_shapes_are_one_line(path):
    x, p, q, eta, h0 = _inputs(1, 5, 4, 2, 0)
    assert h0 is not None
    with pytest.raises(ValueError, match=r"cema: p must be \[3, N\]"):
        cema(x[..., :3], p, q, eta, backend=path)
    with pytest.raises(ValueError, match="cema: h0 must be"):
        cema(x, p, q, eta, h0[..., :1, :], backend=path)
