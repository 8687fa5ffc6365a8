"""Hypothesis cases for ``timestep_norm`` (test support only): odd lengths and group widths,
padding, a streamed-in prior, a common mean offset."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close


def cases():
    @st.composite
    def case(draw):
        batch = draw(st.integers(1, 3))
        length = draw(st.integers(1, 29))
        groups = draw(st.integers(1, 4))
        per = draw(st.integers(1, 6))
        dim = groups * per
        seed = draw(st.integers(0, 2**31 - 1))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        gen = torch.Generator().manual_seed(seed)
        offset = draw(st.sampled_from([0.0, 3.0]))
        x = (torch.randn(batch, length, dim, generator=gen) * 2 + offset).to(dtype)
        if draw(st.booleans()):
            prev_count = torch.randint(0, 5, (batch,), generator=gen)
            prev_mean = torch.randn(batch, groups, generator=gen) + offset
            prev_var = torch.rand(batch, groups, generator=gen) + 0.5
        else:
            prev_count = torch.zeros(batch, dtype=torch.int64)
            prev_mean = torch.zeros(batch, groups)
            prev_var = torch.ones(batch, groups)
        weight = (torch.randn(dim, generator=gen) * 0.5 + 1).to(dtype)
        bias = torch.randn(dim, generator=gen).to(dtype)
        mask = torch.rand(batch, length, generator=gen) < 0.2 if draw(st.booleans()) else None
        return (x, prev_count, prev_mean, prev_var, weight, bias, mask, 1e-5), {}

    return case()


def check(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype and a.shape == e.shape, f"output {i}: {a.dtype}/{a.shape}"
        tol = 2e-3 if e.dtype == torch.float16 else 2e-5
        scale = (
            max(1.0, float(e.detach().abs().max())) if e.is_floating_point() and e.numel() else 1.0
        )
        assert_close(a, e, atol=tol * scale, rtol=tol, msg=f"output {i}: ")
