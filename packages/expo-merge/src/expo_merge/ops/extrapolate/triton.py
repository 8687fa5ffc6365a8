# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Fused ExPO extrapolation in Triton: read sft and aligned once, write the output once.

Each program handles ``BLOCK`` elements of the flattened tensors: load both inputs in their
own dtype, upcast to the compute dtype (float32, or float64 when the output is float32/64, as in
the reference), form ``aligned + alpha * (aligned - sft)`` (keeping ``aligned`` where the step is
zero) and store it rounded to the output dtype. The compiler may fuse the multiply-add (an FMA),
which rounds once instead of twice: results match the reference within one output rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import check_args, compute_dtype

BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _extrapolate_kernel(
    sft_ptr,
    aligned_ptr,
    out_ptr,
    n_elements,
    alpha_hi,
    alpha_lo,
    BLOCK: tl.constexpr,
    FP64: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    a = tl.load(aligned_ptr + offsets, mask=mask, other=0.0)
    s = tl.load(sft_ptr + offsets, mask=mask, other=0.0)
    if FP64:
        a = a.to(tl.float64)
        s = s.to(tl.float64)
        # alpha travels as two float32 halves so float64 math sees it to ~48 bits.
        alpha = tl.cast(alpha_hi, tl.float64) + tl.cast(alpha_lo, tl.float64)
    else:
        a = a.to(tl.float32)
        s = s.to(tl.float32)
        alpha = tl.cast(alpha_hi, tl.float32)
    step = alpha * (a - s)
    result = tl.where(step == 0, a, a + step)
    tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=mask)


def extrapolate(
    sft: torch.Tensor,
    aligned: torch.Tensor,
    alpha: float,
    *,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as ``naive.extrapolate``; tensors on one CUDA device (or CPU under
    ``TRITON_INTERPRET=1``)."""
    dtype = check_args(sft, aligned, out_dtype, out)
    if sft.device != aligned.device or (out is not None and out.device != aligned.device):
        raise ValueError("extrapolate: sft, aligned and out must be on the same device")
    fp64 = compute_dtype(sft.dtype, aligned.dtype, dtype) == torch.float64
    s = sft.contiguous()
    a = aligned.contiguous()
    target = (
        out
        if out is not None and out.is_contiguous()
        else torch.empty(a.shape, dtype=dtype, device=a.device)
    )
    n = a.numel()
    if n:
        alpha = float(alpha)
        hi = float(torch.tensor(alpha, dtype=torch.float32))
        lo = float(torch.tensor(alpha - hi, dtype=torch.float32))
        grid = (triton.cdiv(n, BLOCK),)
        _extrapolate_kernel[grid](
            s, a, target, n, hi, lo, BLOCK=BLOCK, FP64=fp64, num_warps=NUM_WARPS
        )
    if out is not None and target is not out:
        out.copy_(target)
        return out
    return target


FLOAT_TYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}


def aot_launches():
    """Every configuration ``extrapolate`` launches: each (sft, aligned, out) float dtype triple
    (``FP64`` follows from them, as in the launcher), ``BLOCK``/``NUM_WARPS`` fixed."""
    from tensor_utils.ops import KernelLaunch

    for s_dtype, s in FLOAT_TYPES.items():
        for a_dtype, a in FLOAT_TYPES.items():
            for o_dtype, o in FLOAT_TYPES.items():
                fp64 = compute_dtype(s_dtype, a_dtype, o_dtype) == torch.float64
                signature = {
                    "sft_ptr": f"*{s}",
                    "aligned_ptr": f"*{a}",
                    "out_ptr": f"*{o}",
                    "n_elements": "i32",
                    "alpha_hi": "fp32",
                    "alpha_lo": "fp32",
                }
                yield KernelLaunch(
                    _extrapolate_kernel,
                    signature,
                    {"BLOCK": BLOCK, "FP64": fp64},
                    num_warps=NUM_WARPS,
                    label=f"{s}-{a}->{o}",
                )
