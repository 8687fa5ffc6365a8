"""The reference op's algebra, checked with hypothesis against float64 math."""

from __future__ import annotations

import math

import pytest
import torch
from expo_merge.ops.extrapolate import compute_dtype, extrapolate, naive
from hypothesis import given
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_matches_float64, ulp
from tensor_utils_dev.testing.strategies import float_dtypes, random_tensor, seeds, shapes

alphas = st.floats(min_value=-30, max_value=30, allow_nan=False, allow_infinity=False)


def pair(shape, dtype, seed, sigma=0.05):
    aligned = random_tensor(shape, torch.float32, seed)
    noise = random_tensor(shape, torch.float32, seed + 1, scale=sigma)
    return (aligned + noise).to(dtype), aligned.to(dtype)  # (sft, aligned)


def exact(sft, aligned, alpha):
    return aligned + alpha * (aligned - sft)


@given(shape=shapes(), dtype=float_dtypes(include_fp64=True), seed=seeds())
def test_alpha_zero_returns_aligned_bit_for_bit(shape, dtype, seed):
    sft, aligned = pair(shape, dtype, seed)
    aligned.view(-1)[0] = -0.0  # a signed zero must survive too
    out = extrapolate(sft, aligned, 0.0, backend="reference")
    assert out.dtype == aligned.dtype
    assert torch.equal(out.view(_int(dtype)), aligned.view(_int(dtype)))


def _int(dtype):
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]


@given(shape=shapes(), dtype=float_dtypes(include_fp64=True), seed=seeds())
def test_alpha_minus_one_returns_sft_to_rounding(shape, dtype, seed):
    sft, aligned = pair(shape, dtype, seed)
    out = extrapolate(sft, aligned, -1.0, backend="reference")
    if dtype in (torch.bfloat16, torch.float16):
        # aligned - sft is exact in fp32 for half inputs, so -1 lands exactly on SFT.
        assert torch.equal(out, sft)
    else:
        torch.testing.assert_close(out, sft, rtol=ulp(dtype), atol=ulp(dtype))


@given(shape=shapes(), dtype=float_dtypes(), out_dtype=float_dtypes(), seed=seeds(), alpha=alphas)
def test_matches_float64_within_one_rounding(shape, dtype, out_dtype, seed, alpha):
    sft, aligned = pair(shape, dtype, seed)
    out = extrapolate(sft, aligned, alpha, out_dtype=out_dtype, backend="reference")
    assert out.dtype == out_dtype and out.shape == aligned.shape
    assert_matches_float64(out, exact, sft, aligned, alpha, dtype=out_dtype, roundings=1.0)


@given(shape=shapes(), seed=seeds(), a1=alphas, a2=alphas)
def test_linear_in_alpha(shape, seed, a1, a2):
    # In float64 the step is linear in alpha: out(a1 + a2) - A == (out(a1) - A) + (out(a2) - A).
    sft, aligned = pair(shape, torch.float64, seed)
    step = lambda a: extrapolate(sft, aligned, a, backend="reference") - aligned  # noqa: E731
    scale = (aligned.abs() + (aligned - sft).abs() * (abs(a1) + abs(a2))).max().item()
    torch.testing.assert_close(
        step(a1 + a2), step(a1) + step(a2), atol=8 * scale * ulp(torch.float64), rtol=0
    )


def test_compute_dtype_is_fp32_or_better():
    assert compute_dtype(torch.bfloat16, torch.bfloat16, torch.bfloat16) == torch.float32
    assert compute_dtype(torch.float16, torch.float16, torch.float32) == torch.float64
    assert compute_dtype(torch.float64, torch.float64, torch.bfloat16) == torch.float64


def test_bf16_math_would_be_worse_than_ours():
    # The reason for fp32 math: eager bf16 arithmetic rounds the step twice.
    sft, aligned = pair((4096,), torch.bfloat16, 3, sigma=1e-3)
    ours = extrapolate(sft, aligned, 0.3, backend="reference")
    bf16_math = aligned + 0.3 * (aligned - sft)
    ref = exact(sft.double(), aligned.double(), 0.3)
    err = lambda x: (x.double() - ref).abs().sum().item()  # noqa: E731
    assert err(ours) < err(bf16_math)


def test_out_argument_and_errors():
    sft, aligned = pair((5, 3), torch.float32, 1)
    out = torch.full((5, 3), math.nan, dtype=torch.float16)
    res = extrapolate(sft, aligned, 0.5, out=out, backend="reference")
    assert res is out and not torch.isnan(out).any()
    with pytest.raises(ValueError, match="shapes differ"):
        naive.extrapolate(sft, aligned[:4], 0.5)
    with pytest.raises(TypeError, match="float inputs only"):
        naive.extrapolate(sft.int(), aligned.int(), 0.5)


# ---- the op's CPU fast path: the reference's same-dtype branch, torch.lerp(sft, aligned, 1 + alpha)
# for half I/O, which is what the CPU engine runs ----
def _fast(sft, aligned, alpha):
    assert extrapolate.select("cpu", aligned.dtype) == "reference"
    assert naive.lerp_applies(sft, aligned, aligned.dtype)
    out = torch.empty_like(aligned)
    res = extrapolate(sft, aligned, alpha, out=out)
    assert res is out
    return res


def _with_zeros(sft, aligned):
    # Signed zeros on either side and equal pairs (zero step) must behave like the reference.
    n = aligned.numel()
    if n >= 4:
        aligned[0], sft[0] = -0.0, 0.0
        aligned[1], sft[1] = 0.0, -0.0
        aligned[2], sft[2] = -0.0, -0.0
        sft[3] = aligned[3]
    return sft, aligned


@given(n=st.integers(1, 3000), dtype=st.sampled_from([torch.bfloat16, torch.float16]), seed=seeds())
def test_fast_path_alpha_zero_and_minus_one(n, dtype, seed):
    sft, aligned = _with_zeros(*pair((n,), dtype, seed))
    zero = _fast(sft, aligned, 0.0)
    assert torch.equal(zero.view(torch.int16), aligned.view(torch.int16))  # bit for bit, -0.0 too
    back = _fast(sft, aligned, -1.0)
    ref = extrapolate(sft, aligned, -1.0, backend="reference")
    assert torch.equal(back, sft) and torch.equal(back, ref)  # values (+0.0 == -0.0), as reference


@given(
    n=st.integers(1, 3000),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    seed=seeds(),
    alpha=alphas,
    sigma=st.sampled_from([1e-4, 1e-3, 0.05, 1.0]),
)
def test_fast_path_within_one_rounding_of_float64(n, dtype, seed, alpha, sigma):
    sft, aligned = _with_zeros(*pair((n,), dtype, seed, sigma=sigma))
    out = _fast(sft, aligned, alpha)
    assert out.dtype == dtype
    assert_matches_float64(out, exact, sft, aligned, alpha, dtype=dtype, roundings=1.0)
    ref = extrapolate(sft, aligned, alpha, backend="reference")
    # lerp and the reference differ only where a float32 intermediate lands on a rounding tie.
    assert (out != ref).float().mean().item() <= 0.01
