"""Reference ExPO extrapolation in plain PyTorch: the specification the Triton kernel must match.

    out = round_to(out_dtype, aligned + alpha * (aligned - sft))

computed in ``compute_dtype(...)``: float32 when the result is stored in a half type (bf16, fp16),
float64 when it is stored in float32 or float64, so the stored value is within one rounding of
the exact result. Where the step ``alpha * (aligned - sft)`` is zero the output is ``aligned``
itself (this keeps signed zeros, so ``alpha=0`` returns ``aligned`` bit for bit).

Same-dtype branch: bf16/fp16 CPU inputs and output of one dtype are computed as
``torch.lerp(sft, aligned, 1 + alpha)`` (``aligned - (1 - w) * (aligned - sft)`` with float32
internal math and one rounding to the output): the same contract (within one rounding of the
exact result; ``alpha=0`` copies ``aligned``), one vectorized pass instead of five, about 10x
faster on the CPU. The two forms differ only where a float32 intermediate lands on a rounding
tie (and in the sign of a zero result where ``aligned == sft == +-0``).
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input or the output is float32/float64, else float32 (never less than fp32)."""
    return (
        torch.float64 if any(d in (torch.float32, torch.float64) for d in dtypes) else torch.float32
    )


def check_args(
    sft: torch.Tensor, aligned: torch.Tensor, out_dtype: torch.dtype | None, out
) -> torch.dtype:
    if sft.shape != aligned.shape:
        raise ValueError(
            f"extrapolate: shapes differ, sft {list(sft.shape)} vs aligned {list(aligned.shape)}"
        )
    if sft.dtype not in FLOAT_DTYPES or aligned.dtype not in FLOAT_DTYPES:
        raise TypeError(f"extrapolate: float inputs only, got {sft.dtype} and {aligned.dtype}")
    if out is not None:
        if out_dtype is not None and out.dtype != out_dtype:
            raise TypeError(f"extrapolate: out is {out.dtype} but out_dtype is {out_dtype}")
        if out.shape != aligned.shape:
            raise ValueError(
                f"extrapolate: out has shape {list(out.shape)}, expected {list(aligned.shape)}"
            )
        return out.dtype
    dtype = out_dtype or aligned.dtype
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"extrapolate: out_dtype must be a float dtype, got {dtype}")
    return dtype


def lerp_applies(sft: torch.Tensor, aligned: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """The same-dtype branch: bf16/fp16 CPU tensors in, the same dtype out."""
    return (
        sft.dtype == aligned.dtype == out_dtype
        and out_dtype in HALF_DTYPES
        and sft.device.type == aligned.device.type == "cpu"
    )


def extrapolate(
    sft: torch.Tensor,
    aligned: torch.Tensor,
    alpha: float,
    *,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``aligned + alpha * (aligned - sft)``, rounded once to ``out_dtype`` (default: aligned's)."""
    dtype = check_args(sft, aligned, out_dtype, out)
    if lerp_applies(sft, aligned, dtype):
        if out is None:
            out = torch.empty_like(aligned, memory_format=torch.contiguous_format)
        if alpha == 0:  # ALIGNED itself, bit for bit
            return out.copy_(aligned)
        return torch.lerp(sft, aligned, 1.0 + float(alpha), out=out)
    math = compute_dtype(sft.dtype, aligned.dtype, dtype)
    a = aligned.to(math)
    s = sft.to(math)
    step = float(alpha) * (a - s)
    result = torch.where(step == 0, a, a + step).to(dtype)
    if out is None:
        return result
    out.copy_(result)
    return out
