"""The Triton kernel against the PyTorch reference: NaN-poisoned outputs, odd sizes.

CPU runs use the Triton interpreter (``TRITON_INTERPRET=1``): small sizes, and no bf16 *outputs*
(the interpreter truncates instead of rounding to nearest when it stores bf16). The ``gpu`` tests
cover bf16 outputs and large tensors on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from expo_merge.ops.extrapolate import extrapolate
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_matches_float64, nan_like, poison_allocations
from tensor_utils_dev.testing.strategies import float_dtypes, random_tensor, seeds, shapes

alphas = st.floats(min_value=-25, max_value=25, allow_nan=False, allow_infinity=False)
ODD_SIZES = (1, 7, 4095, 4097, 3 * 4096 + 5)


def pair(shape, dtype, seed, device="cpu", sigma=0.05):
    aligned = random_tensor(shape, torch.float32, seed)
    sft = aligned + random_tensor(shape, torch.float32, seed + 1, scale=sigma)
    return sft.to(dtype=dtype, device=device), aligned.to(dtype=dtype, device=device)


def exact(sft, aligned, alpha):
    return aligned + alpha * (aligned - sft)


def _out_dtypes(interpreting):
    return (
        (torch.float16, torch.float32)
        if interpreting
        else (torch.bfloat16, torch.float16, torch.float32)
    )


@pytest.mark.triton
@pytest.mark.parametrize("n", ODD_SIZES)
def test_kernel_writes_every_element(n, device, interpreting):
    for out_dtype in _out_dtypes(interpreting):
        sft, aligned = pair((n,), torch.float16, n, device)
        out = nan_like(torch.empty(n, dtype=out_dtype, device=device))
        extrapolate(sft, aligned, 0.3, out=out, backend="triton")
        ref = extrapolate(sft, aligned, 0.3, out_dtype=out_dtype, backend="reference")
        assert not torch.isnan(out).any(), f"unwritten elements for n={n} {out_dtype}"
        assert_matches_float64(out, exact, sft, aligned, 0.3, dtype=out_dtype)
        # Fused multiply-add may round once where the reference rounds twice: at most one ulp.
        assert (
            (out.double() - ref.double())
            .abs()
            .le(out.double().abs() * 2 * torch.finfo(out_dtype).eps + 1e-30)
            .all()
        )


@pytest.mark.triton
@settings(max_examples=12)
@given(
    shape=shapes(max_dims=3, max_side=33),
    in_dtype=float_dtypes(),
    seed=seeds(),
    alpha=alphas,
    data=st.data(),
)
def test_kernel_matches_reference_property(shape, in_dtype, seed, alpha, data, interpreting):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dtype = data.draw(st.sampled_from(_out_dtypes(interpreting)))
    sft, aligned = pair(shape, in_dtype, seed, device)
    with poison_allocations():  # the kernel's own torch.empty output starts as NaN
        out = extrapolate(sft, aligned, alpha, out_dtype=out_dtype, backend="triton")
    assert out.shape == aligned.shape and out.dtype == out_dtype
    assert_matches_float64(out, exact, sft, aligned, alpha, dtype=out_dtype)


@pytest.mark.triton
def test_kernel_alpha_zero_and_minus_one_exact(device):
    sft, aligned = pair((4099,), torch.float16, 11, device)
    aligned[0] = -0.0
    zero = extrapolate(sft, aligned, 0.0, backend="triton")
    assert torch.equal(zero.view(torch.int16), aligned.view(torch.int16))
    assert torch.equal(extrapolate(sft, aligned, -1.0, backend="triton"), sft)


@pytest.mark.triton
def test_kernel_non_contiguous_inputs_and_out(device):
    sft, aligned = pair((9, 13), torch.float32, 5, device)
    s_t, a_t = sft.t(), aligned.t()
    out = nan_like(torch.empty(26, 9, dtype=torch.float32, device=device))[::2]
    extrapolate(s_t, a_t, 1.5, out=out, backend="triton")
    assert_matches_float64(out, exact, s_t, a_t, 1.5, dtype=torch.float32)


@pytest.mark.triton
def test_dispatch_picks_reference_on_cpu_and_triton_on_cuda(device):
    sft, _ = pair((8,), torch.float32, 0, device)
    chosen = extrapolate.select(sft.device.type, sft.dtype)
    assert chosen == ("triton" if device == "cuda" else "reference")


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_kernel_on_gpu_large_and_odd(in_dtype, out_dtype):
    n = 5_000_017
    sft, aligned = pair((n,), in_dtype, 1, "cuda", sigma=1e-3)
    for alpha in (0.1, 0.5, 25.0, -3.0):
        out = nan_like(torch.empty(n, dtype=out_dtype, device="cuda"))
        extrapolate(sft, aligned, alpha, out=out, backend="triton")
        ref = extrapolate(sft, aligned, alpha, out_dtype=out_dtype, backend="reference")
        assert not torch.isnan(out).any()
        assert_matches_float64(out, exact, sft, aligned, alpha, dtype=out_dtype)
        mismatch = (out != ref).float().mean().item()
        assert mismatch < 1e-3, (
            f"{mismatch:.2%} of elements differ from the reference (FMA ties only)"
        )
