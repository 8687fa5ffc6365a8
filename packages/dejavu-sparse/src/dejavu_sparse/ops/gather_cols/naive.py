"""Reference gathered-column GEMV/GEMM (input sparsity): the spec every backend matches.

``out[b, m] = sum_j x[b, j] * weight_t[idx[j], m]``: ``weight_t`` is a weight stored transposed,
(N, M) with one row per *input* channel, so the columns ``idx`` of the original (M, N) weight
are contiguous rows. ``x`` (B, k) holds the selected inputs only, in ``idx`` order. Accumulated in
float32 and rounded once to ``x``'s dtype; an empty ``idx`` gives zeros.
"""

from __future__ import annotations

import torch

from .._checks import check_gather


def gather_cols(x: torch.Tensor, weight_t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_cols", x, weight_t, idx, rows=False)
    rows = weight_t.index_select(0, idx.long()).float()
    return (x.float() @ rows).to(x.dtype)
