"""Reference thresholded-input GEMV/GEMM (TEAL): the spec every backend matches.

``out = where(|x| > threshold, x, 0) @ weight_t``: ``weight_t`` is a weight stored transposed,
(N, M) with one row per input channel, so the rows a kept input needs are contiguous. Accumulated
in float32 and rounded once to ``x``'s dtype. Also returns ``kept``: how many weight rows a
gathered product reads (input channels kept by at least one batch row), an int64 scalar tensor.
"""

from __future__ import annotations

import torch

from .._checks import check_threshold


def threshold_cols(
    x: torch.Tensor, weight_t: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    threshold = check_threshold("threshold_cols", x, weight_t, threshold)
    keep = x.abs() > threshold
    out = (torch.where(keep, x, 0).float() @ weight_t.float()).to(x.dtype)
    return out, keep.any(0).sum()
