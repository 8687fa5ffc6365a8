"""Kernels against their references (NaN-poisoned scratch, odd sizes), and the 8-bit format."""

import pytest
import torch
from galore_optim.ops import adam_step, quant8
from galore_optim.ops.adam_step import naive as adam_naive
from galore_optim.ops.quant8 import naive as quant_naive
from hypothesis import given
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.strategies import random_tensor, seeds

small = st.integers(min_value=1, max_value=40)


def _case(side, m, n, r, dtype, seed, device):
    low_shape = {"right": (m, r), "left": (r, n), "full": (r, r), "none": (m, n)}[side]
    w = random_tensor((m, n), dtype, seed, device=device)
    g = random_tensor(low_shape, dtype, seed + 1, device=device)
    ea = random_tensor(low_shape, dtype, seed + 2, scale=0.1, device=device)
    eas = random_tensor(low_shape, dtype, seed + 3, device=device).abs() * 0.01
    gen = torch.Generator().manual_seed(seed)
    left = right = None
    if side in ("left", "full"):
        left = torch.linalg.qr(torch.randn(m, r, generator=gen)).Q.to(dtype).to(device)
    if side in ("right", "full"):
        right = (
            torch.linalg.qr(torch.randn(n, r, generator=gen)).Q.T.contiguous().to(dtype).to(device)
        )
    return w, g, ea, eas, left, right


@pytest.mark.triton
@given(
    side=st.sampled_from(["right", "left", "full", "none"]),
    m=small,
    n=small,
    seed=seeds(),
    data=st.data(),
)
def test_projected_adam_step_kernel_matches_reference(side, m, n, seed, data, device):
    r = data.draw(st.integers(min_value=1, max_value=min(m, n)))
    dtype = data.draw(
        st.sampled_from(
            [torch.float32, torch.float16] if device == "cpu" else [torch.float32, torch.bfloat16]
        )
    )
    w, g, ea, eas, left, right = _case(side, m, n, r, dtype, seed, device)
    hp = (0.9, 0.999, 1e-6, 3e-3, 0.25, 1e-3)
    ref = [w.clone(), ea.clone(), eas.clone()]
    adam_naive.projected_adam_step(ref[0], g, ref[1], ref[2], left, right, side, *hp)
    out = [w.clone(), ea.clone(), eas.clone()]
    with poison_allocations():
        adam_step.projected_adam_step(
            out[0], g, out[1], out[2], left, right, side, *hp, backend="triton"
        )
    for name, a, b in zip(("weight", "exp_avg", "exp_avg_sq"), out, ref, strict=True):
        assert_close(a, b, msg=f"{name}: ")


@pytest.mark.triton
@pytest.mark.parametrize(("m", "n", "r"), [(1, 1, 1), (65, 67, 33), (130, 7, 5)])
def test_apply_update_kernel_writes_every_element(m, n, r, device):
    w, g, *_ = _case("right", m, n, r, torch.float32, 7, device)
    right = torch.linalg.qr(torch.randn(n, r)).Q.T.contiguous().to(device)
    ref = w.clone()
    adam_naive.apply_update(ref, g, None, right, "right", 0.1, 0.5, 0.01)
    out = w.clone()
    adam_step.apply_update(out, g, None, right, "right", 0.1, 0.5, 0.01, backend="triton")
    assert_close(out, ref)


def _moment(shape, kind, seed, device="cpu"):
    x = random_tensor(shape, torch.float32, seed, device=device)
    # Several decades inside each block, as Adam moments have.
    x = x * torch.logspace(-6, 0, x.numel(), device=device).reshape(shape)
    return x if kind == "signed" else x.abs()


@pytest.mark.triton
@given(
    numel=st.integers(min_value=1, max_value=1100),
    kind=st.sampled_from(["signed", "unsigned"]),
    seed=seeds(),
)
def test_quantize_kernels_match_reference(numel, kind, seed, device):
    x = _moment((numel,), kind, seed, device)
    ref_codes, ref_absmax = quant_naive.quantize_blockwise(x, kind)
    with poison_allocations():
        codes, absmax = quant8.quantize_blockwise(x, kind, backend="triton")
        deq = quant8.dequantize_blockwise(ref_codes, ref_absmax, kind, backend="triton")
    assert_close(absmax, ref_absmax)
    # Identical codes up to a rare off-by-one at a rounding tie.
    assert (codes.int() - ref_codes.int()).abs().max().item() <= 1
    assert (codes != ref_codes).float().mean().item() <= 0.01
    assert_close(deq, quant_naive.dequantize_blockwise(ref_codes, ref_absmax, kind))


@pytest.mark.triton
@given(numel=st.integers(min_value=1, max_value=700), seed=seeds())
def test_adam8bit_kernel_matches_reference(numel, seed, device):
    g = random_tensor((numel,), torch.float32, seed, device=device)
    mc, ma = quant_naive.quantize_blockwise(_moment((numel,), "signed", seed + 1, device), "signed")
    vc, va = quant_naive.quantize_blockwise(
        _moment((numel,), "unsigned", seed + 2, device), "unsigned"
    )
    ref = (mc.clone(), ma.clone(), vc.clone(), va.clone())
    out = (mc.clone(), ma.clone(), vc.clone(), va.clone())
    n_ref = quant_naive.adam8bit_moments(g, *ref, 0.9, 0.999, 1e-8)
    with poison_allocations():
        n_out = quant8.adam8bit_moments(g, *out, 0.9, 0.999, 1e-8, backend="triton")
    assert_close(n_out, n_ref)
    assert_close(out[1], ref[1])
    assert_close(out[3], ref[3])
    assert (out[0].int() - ref[0].int()).abs().max().item() <= 1
    assert (out[2].int() - ref[2].int()).abs().max().item() <= 1


@given(
    shape=st.lists(st.integers(1, 300), min_size=1, max_size=2).map(tuple),
    kind=st.sampled_from(["signed", "unsigned"]),
    seed=seeds(),
)
def test_quantization_error_is_bounded_per_block(shape, kind, seed):
    x = _moment(shape, kind, seed)
    codes, absmax = quant_naive.quantize_blockwise(x, kind)
    assert codes.shape == x.shape and codes.dtype == quant_naive.code_dtype(kind)
    assert absmax.numel() == quant_naive.num_blocks(x.numel())
    y = quant_naive.dequantize_blockwise(codes, absmax, kind)
    # Companded step: |dx| <= (d/dc of the decode curve) * half a code, relative to the block max.
    bmax = absmax.repeat_interleave(quant_naive.QBLOCK)[: x.numel()].reshape(shape)
    u = (x.abs() / bmax.clamp_min(1e-30)).clamp(0, 1)
    if kind == "signed":
        bound = (2 * u.sqrt() / 127 + 1 / 127**2) * 0.5
    else:
        bound = (4 * u**0.75 / 255 + 6 / 255**2) * 0.5 + 1e-7
    assert ((y - x).abs() <= bound * bmax + 1e-12).all()
    # Exact zeros stay zero; signs never flip.
    assert (torch.sign(y) * torch.sign(x) >= 0).all()


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown quantization kind"):
        quant_naive.quantize_blockwise(torch.zeros(3), "int4")
    with pytest.raises(TypeError, match="float tensor"):
        quant_naive.quantize_blockwise(torch.zeros(3, dtype=torch.int32), "signed")
    codes, absmax = quant_naive.quantize_blockwise(torch.zeros(300), "signed")
    assert absmax.tolist() == [0.0, 0.0]
    assert torch.equal(quant_naive.dequantize_blockwise(codes, absmax, "signed"), torch.zeros(300))
    with pytest.raises(ValueError, match="absmax has"):
        quant_naive.dequantize_blockwise(codes, absmax[:1], "signed")


@pytest.mark.gpu
def test_dispatch_picks_triton_on_cuda():
    x = torch.randn(10, device="cuda")
    assert adam_step.projected_adam_step.select(x.device.type, x.dtype) == "triton"
    assert quant8.quantize_blockwise.select(x.device.type, x.dtype) == "triton"
