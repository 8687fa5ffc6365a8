"""Reference gathered channel blocks (block input sparsity): the spec every backend matches.

``weight_t`` (N, M) is a weight stored transposed (one row per input channel); its rows fall in
``ceil(N / block_size)`` blocks of ``block_size`` consecutive rows, the last one possibly
shorter. ``keep`` (one bool per block) says which blocks are read. ``x`` (B, N) is the whole
input; channels outside the kept blocks do not contribute, whatever their value:
``out[b, m] = sum over kept blocks j, rows r of block j: x[b, r] * weight_t[r, m]``.
Accumulated in float32 and rounded once to ``x``'s dtype; no kept block gives zeros.
"""

from __future__ import annotations

import torch

from .._checks import check_blocks


def block_rows(keep: torch.Tensor, block_size: int, n: int) -> torch.Tensor:
    """The row indices (int64, ascending) of the kept blocks, the last block clipped at ``n``."""
    blocks = keep.nonzero().squeeze(1)
    rows = (blocks[:, None] * block_size + torch.arange(block_size, device=keep.device)).reshape(-1)
    return rows[rows < n]


def gather_blocks(
    x: torch.Tensor, weight_t: torch.Tensor, keep: torch.Tensor, block_size: int
) -> torch.Tensor:
    check_blocks("gather_blocks", x, weight_t, keep, block_size)
    rows = block_rows(keep, block_size, weight_t.shape[0])
    out = x.index_select(1, rows).float() @ weight_t.index_select(0, rows).float()
    return out.to(x.dtype)
