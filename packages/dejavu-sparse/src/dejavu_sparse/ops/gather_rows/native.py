"""Gathered-row GEMV/GEMM on the CPU through a small C kernel (``native.c``).

Four selected rows of the ``nn.Linear``-layout weight at a time take their dot products with
every batch row over cache-sized tiles of the input, so four rows stream from memory at once
where they lie (float32, 14336 x 4096, one thread: 1.97x the dense product at half the rows,
1.00x with every row; ``sampled_addmm``, the ``inplace`` backend: 1.47x / 0.77x). float32 and
bfloat16 weights, batch 1-16, float32 accumulation, threads as ``torch.get_num_threads()``
(splitting the selected rows; one thread per MiB of selected weights at most). Without a
working C compiler, for other dtypes, larger batches or a weight whose rows are not contiguous,
the ``inplace`` backend runs instead (which hands what it does not serve to ``chunked``). Above
the measured crossover density (``fallback.py``: ``rows_native``, ``rows_native_bf16``) the
dense product runs.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from ...fallback import use_dense
from .._checks import check_gather
from .._compile import DTYPE_CODES, INT64, POINTER, function, threads_for
from . import inplace

SOURCE = Path(__file__).with_name("native.c")
DTYPES = DTYPE_CODES
MAX_BATCH = 16
_P, _I = POINTER, INT64


@functools.cache
def kernel():
    """The C function, or ``None`` where the library cannot be built (warned once)."""
    return function(
        SOURCE,
        "dejavu_gather_rows",
        ctypes.c_int,
        [ctypes.c_int, _P, _I, _P, _I, _I, _I, _P, _I, _I, _P, ctypes.c_int],
    )


def gather_rows(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_rows", x, weight, idx, rows=True)
    batch, kdim = x.shape
    serves = (
        x.device.type == "cpu"
        and x.dtype in DTYPES
        and 0 < batch <= MAX_BATCH
        and (weight.stride(1) == 1 or kdim <= 1)
    )
    fn = kernel() if serves else None
    if fn is None:
        return inplace.gather_rows(x, weight, idx)
    n, k = weight.shape[0], idx.shape[0]
    entry = "rows_native" if x.dtype == torch.float32 else "rows_native_bf16"
    if use_dense("cpu", batch, k, n, entry):
        return (x @ weight.t()).index_select(1, idx.long())
    out = torch.empty(batch, k, dtype=torch.float32)
    if k == 0:
        return out.to(x.dtype)
    xs = x.float().contiguous()
    idx = idx.to(torch.int64).contiguous()
    threads = threads_for(k * kdim * weight.element_size())
    bad = fn(DTYPES[x.dtype], xs.data_ptr(), xs.stride(0), weight.data_ptr(), n,
             weight.stride(0), kdim, idx.data_ptr(), k, batch, out.data_ptr(), threads)  # fmt: skip
    if bad:
        raise ValueError(f"gather_rows: idx holds a row outside [0, {n})")
    return out if x.dtype == torch.float32 else out.to(x.dtype)
