"""Gathered-row GEMV in plain PyTorch that reads the selected weight rows in place (no copy).

At batch 1 in float32/float64 the selected rows are one ``torch.sparse.sampled_addmm``: the
selection is a one-row CSR pattern over the outputs, and the kernel takes one dot product of
``x`` with each selected row of the weight where it lies, streaming each row once. The copying
path (``chunked``) moves every selected row twice and loses to dense above about 40% of the
rows on the CPU; this one measured 1.45-1.65x at half the rows (14336 x 4096 float32, one
thread). Other batches and dtypes take the ``chunked`` path: the CSR kernel would read each
selected row once per batch row, and it has no half-precision kernel.
"""

from __future__ import annotations

import warnings

import torch

from ...fallback import use_dense
from .._checks import check_gather
from . import chunked

INPLACE_DTYPES = (torch.float32, torch.float64)


def gather_rows(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_rows", x, weight, idx, rows=True)
    batch, k = x.shape[0], idx.shape[0]
    if batch != 1 or x.dtype not in INPLACE_DTYPES or k == 0 or weight.shape[1] == 0:
        return chunked.gather_rows(x, weight, idx)
    if use_dense(x.device.type, batch, k, weight.shape[0], "rows_inplace"):
        return (x @ weight.t()).index_select(1, idx.long())
    with warnings.catch_warnings():  # "sparse CSR support is in beta": not the user's concern
        warnings.simplefilter("ignore")
        pattern = torch.sparse_csr_tensor(
            torch.tensor([0, k], device=x.device),
            idx.long(),
            torch.zeros(k, dtype=x.dtype, device=x.device),  # beta=0 still reads them
            (1, weight.shape[0]),
            check_invariants=False,
        )
        out = torch.sparse.sampled_addmm(pattern, x, weight.t(), beta=0.0)
    return out.values().view(1, k)
