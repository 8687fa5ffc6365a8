"""Thresholded-input GEMV/GEMM in plain PyTorch on any device: the kept channels are found with
tensor operations and their weight rows read by ``gather_cols`` (its Triton kernel on CUDA).

One row whose kept fraction is above the dense-fallback density runs as one masked dense product
(no index list, no scatter back). Batches read the union of their rows' channels, each row masked
to its own.
"""

from __future__ import annotations

import torch

from ...fallback import use_dense
from .._checks import check_threshold
from ..gather_cols import fallback_key, gather_cols


def threshold_cols(
    x: torch.Tensor, weight_t: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    threshold = check_threshold("threshold_cols", x, weight_t, threshold)
    n = weight_t.shape[0]
    keep = x.abs() > threshold
    if x.shape[0] == 1:
        kept = keep.sum()
        if use_dense(x.device.type, 1, int(kept), n, fallback_key(x, weight_t)):
            return torch.where(keep, x, 0) @ weight_t, kept
        idx = keep[0].nonzero().squeeze(1)
        return gather_cols(x.index_select(1, idx), weight_t, idx), kept
    union = keep.any(0)
    idx = union.nonzero().squeeze(1)
    return gather_cols(torch.where(keep, x, 0).index_select(1, idx), weight_t, idx), union.sum()
