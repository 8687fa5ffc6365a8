"""Hypothesis cases for ``cema`` (test support only): random stable coefficients, odd lengths,
with and without an incoming state."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close


def random_coefficients(dim: int, n_dim: int, seed: int, dtype=torch.float32):
    """(p, q, eta) drawn like a trained layer's: p in (0, 1), |q| = 1 - p*delta < 1, any phase."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(dim, n_dim, generator=gen) * 0.9 + 0.05
    delta = torch.rand(dim, n_dim, generator=gen)
    mag = 1.0 - p * delta
    theta = torch.rand(dim, n_dim, generator=gen) * 2 * math.pi
    q = torch.stack([mag * torch.cos(theta), mag * torch.sin(theta)], -1)
    eta = torch.randn(dim, n_dim, 2, generator=gen) / math.sqrt(n_dim)
    return p.to(dtype), q.to(dtype), eta.to(dtype)


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.integers(1, 2))
        length = draw(st.integers(1, 37))
        dim = draw(st.integers(1, 7))
        n_dim = draw(st.integers(1, 5))
        seed = draw(st.integers(0, 2**31 - 1))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(batch, length, dim, generator=gen).to(dtype)
        p, q, eta = random_coefficients(dim, n_dim, seed)
        h0 = torch.randn(batch, dim, n_dim, 2, generator=gen) if draw(st.booleans()) else None
        return (x, p, q, eta, h0), {}

    return case()


def check(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Outputs agree to 1e-4 of their scale (fp32 math, different summation orders)."""
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype and a.shape == e.shape, f"output {i}: {a.dtype}/{a.shape}"
        scale = max(1.0, float(e.detach().abs().max())) if e.numel() else 1.0
        tol = 2e-3 if e.dtype == torch.float16 else 1e-4
        assert_close(a, e, atol=tol * scale, rtol=tol, msg=f"output {i}: ")
