"""Gathered-column GEMV/GEMM on the CPU through a small C kernel (``native.c``).

The C kernel adds GROUP (8) selected rows of the transposed weight at a time into a tile of the
float32 output, so eight rows stream from memory at once where they lie: it reads the selected
rows at the dense product's bandwidth (float32, Llama-3-8B shapes, one thread: 1.98-2.08x at half
the rows, 0.99-1.03x with every row), where ``embedding_bag`` (the ``chunked`` backend's batch-1
path) reaches 72-89%. bfloat16 weights (converted in the inner loop): 1.65-1.69x at half the
rows, 0.82-0.84x with all. Any batch, float32 accumulation, threads as
``torch.get_num_threads()`` (splitting the output columns; one thread per MiB of the weight at
most). The library is compiled on first use (``ops/_compile.py``); without a working C
compiler, for other dtypes or a weight whose rows are not contiguous, the ``chunked`` backend
runs instead. Above the measured crossover density (``fallback.py``: ``cols_native``,
``cols_native_bf16``) the dense product runs.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from ...fallback import use_dense
from .._checks import check_gather
from .._compile import DTYPE_CODES, INT64, POINTER, function, threads_for
from . import chunked

SOURCE = Path(__file__).with_name("native.c")
DTYPES = DTYPE_CODES
_P, _I = POINTER, INT64


@functools.cache
def kernel():
    """The C function, or ``None`` where the library cannot be built (warned once)."""
    return function(
        SOURCE,
        "dejavu_gather_cols",
        ctypes.c_int,
        [ctypes.c_int, _P, _I, _P, _I, _I, _I, _P, _I, _I, _P, ctypes.c_int],
    )


def available() -> bool:
    """True when the C kernel is built and loaded (builds it on the first call)."""
    return kernel() is not None


def fallback_entry(dtype: torch.dtype) -> str:
    """This backend's dense-fallback table entry (``fallback.py``) for ``dtype``."""
    return "cols_native" if dtype == torch.float32 else "cols_native_bf16"


def runs_natively(x: torch.Tensor, weight_t: torch.Tensor) -> bool:
    """True when this backend's C kernel (not its ``chunked`` fallback) serves the call."""
    return (
        x.device.type == "cpu"
        and x.dtype in DTYPES
        and (weight_t.stride(1) == 1 or weight_t.shape[1] <= 1)
        and available()
    )


def gather_cols(x: torch.Tensor, weight_t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_cols", x, weight_t, idx, rows=False)
    if not runs_natively(x, weight_t):
        return chunked.gather_cols(x, weight_t, idx)
    batch, k = x.shape
    n, m = weight_t.shape
    if use_dense("cpu", batch, k, n, fallback_entry(x.dtype)):
        dense = torch.zeros(batch, n, dtype=x.dtype)
        dense.index_add_(1, idx.long(), x)  # repeated rows add up
        return dense @ weight_t
    out = torch.zeros(batch, m, dtype=torch.float32)
    if k == 0 or m == 0 or batch == 0:
        return out.to(x.dtype)
    xs = x.float().contiguous()
    idx = idx.to(torch.int64).contiguous()
    threads = threads_for(k * m * weight_t.element_size())
    fn = kernel()
    assert fn is not None  # runs_natively checked it
    bad = fn(DTYPES[x.dtype], xs.data_ptr(), xs.stride(0), weight_t.data_ptr(), n,
             weight_t.stride(0), m, idx.data_ptr(), k, batch, out.data_ptr(), threads)  # fmt: skip
    if bad:
        raise ValueError(f"gather_cols: idx holds a row outside [0, {n})")
    return out if x.dtype == torch.float32 else out.to(x.dtype)
