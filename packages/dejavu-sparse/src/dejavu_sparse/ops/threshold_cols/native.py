"""Thresholded-input GEMV/GEMM on the CPU in one C call (``native.c``): the kept channels are
found, packed and their weight rows streamed by ``gather_cols``' C kernel, without the five to
six PyTorch operations per projection (about 50 us on the 2-core CPU machine) that the
``gathered`` backend spends on the selection. Float32 and bfloat16; other dtypes, CUDA tensors,
weights whose rows are not contiguous, and machines without a C compiler run ``gathered``.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import torch

from ... import fallback
from .._checks import check_threshold
from .._compile import INT64, POINTER, function, threads_for
from ..gather_cols.native import DTYPES, fallback_entry, runs_natively
from . import gathered

SOURCE = Path(__file__).with_name("native.c")
_P, _I = POINTER, INT64


@functools.cache
def kernel():
    """The C function, or ``None`` where the library cannot be built (warned once)."""
    args = [ctypes.c_int, _P, _I, _I, ctypes.c_float, _P, _I, _I, _I, _I, _P, _P, _P, ctypes.c_int]
    return function(SOURCE, "dejavu_threshold_cols", ctypes.c_int64, args)


_local = threading.local()
_plans: dict[tuple, tuple[int, int]] = {}


def _scratch(numel: int) -> torch.Tensor:
    """A float32 buffer of at least ``numel`` elements, reused per thread (the C call releases
    the GIL, so threads must not share it): one allocation fewer per call, which counts on a
    small model's decode step (120 calls per token on SmolLM2)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.numel() < numel:
        buf = _local.buf = torch.empty(numel, dtype=torch.float32)
    return buf


def _plan(batch: int, n: int, m: int, dtype: torch.dtype) -> tuple[int, int]:
    """(rows above which every row is read in order, threads) for a call of this shape."""
    key = (batch, n, m, dtype, torch.get_num_threads(), fallback.version())
    plan = _plans.get(key)
    if plan is None:
        dense_above = int(fallback.dense_fallback_density("cpu", batch, fallback_entry(dtype)) * n)
        plan = _plans[key] = (dense_above, threads_for(n * m * dtype.itemsize))
        if len(_plans) > 4096:  # many shapes: start over rather than grow without bound
            _plans.clear()
            _plans[key] = plan
    return plan


def threshold_cols(
    x: torch.Tensor, weight_t: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    threshold = check_threshold("threshold_cols", x, weight_t, threshold)
    fn = kernel() if runs_natively(x, weight_t) else None
    if fn is None:
        return gathered.threshold_cols(x, weight_t, threshold)
    batch, n = x.shape
    m = weight_t.shape[1]
    out = torch.zeros(batch, m, dtype=torch.float32)
    if batch == 0 or n == 0:
        return out.to(x.dtype), torch.zeros((), dtype=torch.int64)
    xf = x.float()
    if xf.stride(1) != 1:
        xf = xf.contiguous()
    idx = torch.empty(n + 1, dtype=torch.int64)  # the kept rows, then their count
    xs = _scratch(batch * n)  # the kept inputs, packed
    if x.dtype != torch.float32:  # compared as PyTorch does: the threshold in x's dtype
        threshold = float(torch.tensor(threshold, dtype=x.dtype))
    dense_above, threads = _plan(batch, n, m, x.dtype)
    fn(DTYPES[x.dtype], xf.data_ptr(), xf.stride(0), batch, threshold, weight_t.data_ptr(), n,
       weight_t.stride(0), m, dense_above, idx.data_ptr(), xs.data_ptr(), out.data_ptr(),
       threads)  # fmt: skip
    return (out if x.dtype == torch.float32 else out.to(x.dtype)), idx[n]
