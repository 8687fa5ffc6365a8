"""Gathered-row GEMV/GEMM in plain PyTorch that reads only the selected weight rows.

The selected rows are copied a chunk at a time (about 2 MiB, so the chunk stays in cache) into
one reused buffer and multiplied there, so the full weight is never streamed and nothing of
the weight's size is allocated. Above the measured crossover density (``fallback.py``) the dense
product runs instead. Half-precision inputs go through the BLAS's own float32 accumulation
(each output is one dot product, rounded once).
"""

from __future__ import annotations

import torch

from ...fallback import use_dense
from .._checks import check_gather

CHUNK_BYTES = 2 << 20


def chunk_rows(row_bytes: int) -> int:
    return max(16, CHUNK_BYTES // max(1, row_bytes))


def gather_rows(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_rows", x, weight, idx, rows=True)
    batch, k = x.shape[0], idx.shape[0]
    idx = idx.long()
    if use_dense(x.device.type, batch, k, weight.shape[0], "rows"):
        return (x @ weight.t()).index_select(1, idx)
    out = torch.empty(batch, k, dtype=x.dtype, device=x.device)
    step = chunk_rows(weight.shape[1] * weight.element_size())
    buf = torch.empty(min(step, k), weight.shape[1], dtype=weight.dtype, device=weight.device)
    for start in range(0, k, step):
        stop = min(k, start + step)
        rows = buf[: stop - start]
        torch.index_select(weight, 0, idx[start:stop], out=rows)
        torch.mm(x, rows.t(), out=out[:, start:stop])
    return out
