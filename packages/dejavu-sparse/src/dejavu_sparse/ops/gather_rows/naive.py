"""Reference gathered-row GEMV/GEMM (output sparsity): the spec every backend matches.

``out[b, j] = sum_k x[b, k] * weight[idx[j], k]``: only the selected output rows of an
``nn.Linear``-layout weight (one row per output) are computed, in float32, and rounded once to
``x``'s dtype. ``x`` is (B, K), ``weight`` (N, K), ``idx`` (k,) int32/int64 in [0, N); the
result is (B, k). An empty ``idx`` gives a (B, 0) result.
"""

from __future__ import annotations

import torch

from .._checks import check_gather


def gather_rows(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_rows", x, weight, idx, rows=True)
    rows = weight.index_select(0, idx.long()).float()
    return (x.float() @ rows.t()).to(x.dtype)
