"""Gathered channel blocks through ``gather_cols``: the kept blocks expanded into row indices,
the selected inputs gathered, and the gathered-column op runs (its Triton kernel on CUDA, its
chunked or in-place path on the CPU). Every dtype and batch; the CUDA default."""

from __future__ import annotations

import torch

from .._checks import check_blocks
from ..gather_cols import gather_cols
from .naive import block_rows


def gather_blocks(
    x: torch.Tensor, weight_t: torch.Tensor, keep: torch.Tensor, block_size: int
) -> torch.Tensor:
    check_blocks("gather_blocks", x, weight_t, keep, block_size)
    rows = block_rows(keep, block_size, weight_t.shape[0])
    return gather_cols(x.index_select(1, rows), weight_t, rows)
