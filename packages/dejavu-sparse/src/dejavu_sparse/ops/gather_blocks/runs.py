"""Gathered channel blocks in plain PyTorch, reading each run of kept blocks as one contiguous
stream.

The kept blocks are merged into maximal runs of consecutive blocks, and each run is one
``addmm`` of the matching slice of ``x`` with a view of the weight (no copy, no index list):
BLAS streams a contiguous slab, which a row gather (``embedding_bag``, ``sampled_addmm``) does
not. At Llama-3-8B MLP shapes (float32, batch 1, one thread) half the blocks of 16 rows
measured 1.69x (down) / 1.80x (fused gate/up) faster than dense where the in-place row gather of
half the rows gave 1.34x / 1.58x (the Python loop over the runs included;
``benchmarks/probe_blocks_cpu.py``). Half-precision inputs take
the ``expanded`` path (its chunked copy accumulates in float32); above the measured crossover
density (``fallback.py``) one masked dense product runs instead.
"""

from __future__ import annotations

import torch

from ...fallback import use_dense
from .._checks import check_blocks
from . import expanded

NATIVE_DTYPES = (torch.float32, torch.float64)


def block_runs(keep: torch.Tensor) -> tuple[list[int], list[int]]:
    """Starts and ends (exclusive), in blocks, of the maximal runs of kept blocks."""
    k = keep.to(torch.int8)
    z = k.new_zeros(1)
    d = torch.diff(k, prepend=z, append=z)
    return (d == 1).nonzero().squeeze(1).tolist(), (d == -1).nonzero().squeeze(1).tolist()


def gather_blocks(
    x: torch.Tensor, weight_t: torch.Tensor, keep: torch.Tensor, block_size: int
) -> torch.Tensor:
    check_blocks("gather_blocks", x, weight_t, keep, block_size)
    if x.dtype not in NATIVE_DTYPES:
        return expanded.gather_blocks(x, weight_t, keep, block_size)
    n = weight_t.shape[0]
    kept = int(keep.sum())
    if kept and use_dense(x.device.type, x.shape[0], kept, keep.numel(), "blocks"):
        mask = keep.repeat_interleave(block_size)[:n]
        return torch.where(mask, x, 0.0) @ weight_t
    out = x.new_zeros(x.shape[0], weight_t.shape[1])
    starts, ends = block_runs(keep)
    for s, e in zip(starts, ends, strict=True):
        lo, hi = s * block_size, min(n, e * block_size)
        out.addmm_(x[:, lo:hi], weight_t[lo:hi])
    return out
