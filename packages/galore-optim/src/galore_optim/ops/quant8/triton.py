# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Triton kernels for block-wise 8-bit moments (see ``naive.py`` for the format).

Each program handles ``ROWS`` quantization blocks of ``QBLOCK`` values as a ``(ROWS, QBLOCK)``
tile: the absmax is a row reduction, so a block never crosses programs. The fused Adam kernel
reads the two code tensors, the fresh gradient and the absmaxes once, and writes the new codes,
absmaxes and ``N`` once: no fp32 moment tensor ever exists in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import QBLOCK, code_dtype, num_blocks

_ROWS = 4


@triton.jit
def _encode(x, SIGNED: tl.constexpr):
    absmax = tl.max(tl.abs(x), axis=1)
    safe = tl.where(absmax > 0, absmax, 1.0)
    u = tl.div_rn(x, safe[:, None])
    if SIGNED:
        y = tl.sqrt_rn(tl.abs(u)) * 127.0
        r = tl.floor(y + 0.5)
        r = tl.minimum(r, 127.0)
        code = tl.where(u < 0, -r, r)
    else:
        y = tl.sqrt_rn(tl.sqrt_rn(tl.maximum(u, 0.0))) * 255.0
        code = tl.minimum(tl.floor(y + 0.5), 255.0)
    return code, absmax


@triton.jit
def _decode(code, absmax, SIGNED: tl.constexpr):
    if SIGNED:
        c = code / 127.0
        x = tl.where(c < 0, -(c * c), c * c)
    else:
        c = code / 255.0
        c2 = c * c
        x = c2 * c2
    return x * absmax[:, None]


@triton.jit
def _quantize_kernel(
    x_ptr,
    code_ptr,
    absmax_ptr,
    numel,
    nblocks,
    SIGNED: tl.constexpr,
    ROWS: tl.constexpr,
    QB: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    offs = rows[:, None].to(tl.int64) * QB + tl.arange(0, QB)[None, :]
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    code, absmax = _encode(x, SIGNED)
    tl.store(code_ptr + offs, code.to(code_ptr.dtype.element_ty), mask=mask)
    tl.store(absmax_ptr + rows, absmax, mask=rows < nblocks)


@triton.jit
def _dequantize_kernel(
    code_ptr,
    absmax_ptr,
    out_ptr,
    numel,
    nblocks,
    SIGNED: tl.constexpr,
    ROWS: tl.constexpr,
    QB: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    offs = rows[:, None].to(tl.int64) * QB + tl.arange(0, QB)[None, :]
    mask = offs < numel
    code = tl.load(code_ptr + offs, mask=mask, other=0).to(tl.float32)
    absmax = tl.load(absmax_ptr + rows, mask=rows < nblocks, other=0.0)
    x = _decode(code, absmax, SIGNED)
    tl.store(out_ptr + offs, x.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _adam8bit_kernel(
    g_ptr,
    mc_ptr,
    ma_ptr,
    vc_ptr,
    va_ptr,
    n_ptr,
    numel,
    nblocks,
    beta1,
    beta2,
    eps,
    ROWS: tl.constexpr,
    QB: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    rmask = rows < nblocks
    offs = rows[:, None].to(tl.int64) * QB + tl.arange(0, QB)[None, :]
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    m = _decode(
        tl.load(mc_ptr + offs, mask=mask, other=0).to(tl.float32),
        tl.load(ma_ptr + rows, mask=rmask, other=0.0),
        True,
    )
    v = _decode(
        tl.load(vc_ptr + offs, mask=mask, other=0).to(tl.float32),
        tl.load(va_ptr + rows, mask=rmask, other=0.0),
        False,
    )
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    n = m / (tl.sqrt_rn(v) + eps)
    tl.store(n_ptr + offs, n.to(n_ptr.dtype.element_ty), mask=mask)
    mcode, mabs = _encode(m, True)
    vcode, vabs = _encode(v, False)
    tl.store(mc_ptr + offs, mcode.to(mc_ptr.dtype.element_ty), mask=mask)
    tl.store(vc_ptr + offs, vcode.to(vc_ptr.dtype.element_ty), mask=mask)
    tl.store(ma_ptr + rows, mabs, mask=rmask)
    tl.store(va_ptr + rows, vabs, mask=rmask)


def _grid(numel: int) -> tuple[int]:
    return (max(1, triton.cdiv(num_blocks(numel), _ROWS)),)


def quantize_blockwise(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = code_dtype(kind)
    if not x.is_floating_point():
        raise TypeError(f"quantize_blockwise needs a float tensor, got {x.dtype}")
    x = x.contiguous()
    codes = torch.empty(x.shape, dtype=dtype, device=x.device)
    absmax = torch.empty(num_blocks(x.numel()), dtype=torch.float32, device=x.device)
    if x.numel():
        _quantize_kernel[_grid(x.numel())](
            x,
            codes,
            absmax,
            x.numel(),
            absmax.numel(),
            SIGNED=kind == "signed",
            ROWS=_ROWS,
            QB=QBLOCK,
        )
    return codes, absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, kind: str) -> torch.Tensor:
    if codes.dtype != code_dtype(kind):
        raise TypeError(f"{kind} codes must be {code_dtype(kind)}, got {codes.dtype}")
    if absmax.numel() != num_blocks(codes.numel()):
        raise ValueError(
            f"absmax has {absmax.numel()} blocks, codes need {num_blocks(codes.numel())}"
        )
    codes = codes.contiguous()
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    if codes.numel():
        _dequantize_kernel[_grid(codes.numel())](
            codes,
            absmax.float().contiguous(),
            out,
            codes.numel(),
            absmax.numel(),
            SIGNED=kind == "signed",
            ROWS=_ROWS,
            QB=QBLOCK,
        )
    return out


def adam8bit_moments(grad, m_codes, m_absmax, v_codes, v_absmax, beta1, beta2, eps) -> torch.Tensor:
    for t in (grad, m_codes, m_absmax, v_codes, v_absmax):
        if not t.is_contiguous():
            raise ValueError("adam8bit_moments needs contiguous tensors")
    if m_codes.dtype != torch.int8 or v_codes.dtype != torch.uint8:
        raise TypeError(f"moment codes must be int8 / uint8, got {m_codes.dtype} / {v_codes.dtype}")
    if m_codes.shape != grad.shape or v_codes.shape != grad.shape:
        raise ValueError(
            f"moment shapes {tuple(m_codes.shape)} / {tuple(v_codes.shape)} differ from gradient {tuple(grad.shape)}"
        )
    norm = torch.empty(grad.shape, dtype=torch.float32, device=grad.device)
    if grad.numel():
        _adam8bit_kernel[_grid(grad.numel())](
            grad,
            m_codes,
            m_absmax,
            v_codes,
            v_absmax,
            norm,
            grad.numel(),
            m_absmax.numel(),
            float(beta1),
            float(beta2),
            float(eps),
            ROWS=_ROWS,
            QB=QBLOCK,
        )
    return norm


def aot_launches():
    """Every configuration the 8-bit launchers use: quantize from each float dtype and dequantize,
    both code kinds, and the fused Adam update for each gradient dtype (``ROWS``/``QBLOCK``
    fixed, default warps and stages)."""
    from tensor_utils.ops import KernelLaunch

    const = {"ROWS": _ROWS, "QB": QBLOCK}
    sizes = {"numel": "i32", "nblocks": "i32"}
    for signed, code in ((True, "i8"), (False, "u8")):
        for x in ("fp32", "fp16", "bf16"):
            signature = {"x_ptr": f"*{x}", "code_ptr": f"*{code}", "absmax_ptr": "*fp32", **sizes}
            yield KernelLaunch(
                _quantize_kernel, signature, {"SIGNED": signed, **const}, label=f"quantize {x}"
            )
        signature = {"code_ptr": f"*{code}", "absmax_ptr": "*fp32", "out_ptr": "*fp32", **sizes}
        yield KernelLaunch(
            _dequantize_kernel, signature, {"SIGNED": signed, **const}, label=f"dequantize {code}"
        )
    for g in ("fp32", "fp16", "bf16"):
        signature = {
            "g_ptr": f"*{g}",
            "mc_ptr": "*i8",
            "ma_ptr": "*fp32",
            "vc_ptr": "*u8",
            "va_ptr": "*fp32",
            "n_ptr": "*fp32",
            **sizes,
            **dict.fromkeys(("beta1", "beta2", "eps"), "fp32"),
        }
        yield KernelLaunch(_adam8bit_kernel, signature, const, label=f"adam8bit {g}")
