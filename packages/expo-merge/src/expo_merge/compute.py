"""The per-tensor math shared by the engines and the state-dict API: the ``extrapolate`` op per
alpha, the statistics, and the overflow check.

Every output value comes from ``expo_merge.ops.extrapolate`` (the Triton kernel on CUDA, the
reference otherwise, whose same-dtype bf16/fp16 branch is one ``torch.lerp``). The one shortcut
here is ``alpha == 0`` with an unchanged dtype on the CPU: the op's result is ALIGNED's bits, so
the chunk engine hands ALIGNED's own chunk to the writer instead of copying it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import StepOverflowError
from .ops.extrapolate import extrapolate
from .stats import StepStats, delta_stats


def check_overflow(
    name: str,
    alpha: float,
    sft: torch.Tensor,
    aligned: torch.Tensor,
    out: torch.Tensor,
    stats: StepStats,
    allow: bool,
) -> None:
    """Count outputs that are +-inf or NaN where both inputs are finite (the step overflowed the
    output dtype); raise unless ``allow``."""
    if not out.numel():
        return
    # One min/max reduction (measured ~2 ms per 1M bf16 elements on one CPU core, vs ~36 ms for
    # isfinite().all()); inf and NaN both show up in it. The exact count runs only when needed.
    lo, hi = torch.aminmax(out)
    if math.isfinite(lo.item()) and math.isfinite(hi.item()):
        return
    bad = int(
        torch.count_nonzero(~torch.isfinite(out) & torch.isfinite(aligned) & torch.isfinite(sft))
    )
    if not bad:
        return
    if not allow:
        info = torch.finfo(out.dtype)
        raise StepOverflowError(
            f"tensor {name!r}: {bad} element(s) overflow {str(out.dtype).removeprefix('torch.')} "
            f"(largest finite {info.max:.4g}) at alpha={alpha:g}; use --dtype fp32, a smaller "
            "alpha, or --allow-overflow to write inf"
        )
    stats.overflowed += bad
    if not stats.first_overflow:
        stats.first_overflow = name


def compute_chunk(
    name: str,
    sft: torch.Tensor,
    aligned: torch.Tensor,
    alphas: Sequence[float],
    stats: Sequence[StepStats],
    outs: Sequence[torch.Tensor],
    sample: Sequence[tuple[int, int]],
    *,
    backend: str | None = None,
    alias: bool = True,
    allow_overflow: bool = False,
) -> list[torch.Tensor]:
    """One flat chunk of a tensor: each alpha's output into ``outs`` (or, with ``alias`` and
    alpha=0 in ALIGNED's dtype, ``aligned`` itself); statistics over the chunk-relative
    ``sample`` ranges."""
    deltas = [delta_stats(aligned[lo:hi], sft[lo:hi]) for lo, hi in sample]
    results = []
    for alpha, st, oc in zip(alphas, stats, outs, strict=True):
        if alpha == 0 and alias and oc.dtype == aligned.dtype and backend in (None, "auto"):
            oc = aligned  # the op's alpha=0 result is ALIGNED bit for bit: skip the copy
        else:
            extrapolate(sft, aligned, alpha, out=oc, backend=backend)
            check_overflow(name, alpha, sft, aligned, oc, st, allow_overflow)
        for (lo, hi), (nz, dsq) in zip(sample, deltas, strict=True):
            st.add_output(aligned[lo:hi], oc[lo:hi], nz, dsq)
        st.total_elements += oc.numel()
        results.append(oc)
    return results


def compute_tensor(
    name: str,
    sft: torch.Tensor,
    aligned: torch.Tensor,
    alphas: Sequence[float],
    out_dtype: torch.dtype,
    stats: Sequence[StepStats],
    *,
    device: torch.device | None,
    chunk: int,
    backend: str | None,
    exact_stats: bool = False,
    allow_overflow: bool = False,
) -> list[torch.Tensor]:
    """One whole output tensor per alpha, on ``aligned``'s device; statistics accumulated.

    On a CUDA device: one op call per alpha on the whole tensor. On the CPU: ``chunk``-element
    pieces, so temporaries stay small whatever the tensor size.
    """
    from .stream import sample_ranges

    home = aligned.device
    if device is not None and device != home:
        aligned = aligned.to(device, non_blocking=True)
        sft = sft.to(device, non_blocking=True)
    if aligned.device.type == "cuda":
        nz, dsq = delta_stats(aligned, sft)
        outs = []
        for alpha, st in zip(alphas, stats, strict=True):
            out = extrapolate(sft, aligned, alpha, out_dtype=out_dtype, backend=backend)
            check_overflow(name, alpha, sft, aligned, out, st, allow_overflow)
            st.add_output(aligned, out, nz, dsq)
            st.total_elements += out.numel()
            outs.append(out.to(home) if home != out.device else out)
        return outs
    a = aligned.contiguous().reshape(-1)
    s = sft.contiguous().reshape(-1)
    outs = [torch.empty(aligned.shape, dtype=out_dtype) for _ in alphas]
    flats = [o.view(-1) for o in outs]
    for i in range(0, a.numel(), chunk):
        ac, sc = a[i : i + chunk], s[i : i + chunk]
        compute_chunk(
            name,
            sc,
            ac,
            alphas,
            stats,
            [f[i : i + chunk] for f in flats],
            sample_ranges(i, i + ac.numel(), exact_stats),
            backend=backend,
            alias=False,
            allow_overflow=allow_overflow,
        )
    return outs
