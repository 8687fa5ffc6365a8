"""Gathered-column GEMV/GEMM: ``gather_cols(x, weight_t, idx) == x @ weight_t[idx]`` reading only
the selected rows of a transposed weight (``naive.py`` is the contract). Backends: ``triton``
(CUDA), ``native`` (the CPU default: a small C kernel compiled on first use for float32 and
bfloat16, handing other dtypes and machines without a C compiler to ``chunked``), ``chunked``
(plain PyTorch), and the reference."""

from __future__ import annotations

import torch

from tensor_utils.ops import Backend, Op

from . import naive

gather_cols = Op(
    "dejavu_sparse::gather_cols",
    reference=naive.gather_cols,
    backends=[
        Backend(
            "triton",
            "dejavu_sparse.ops.gather_cols.triton:gather_cols",
            aot="dejavu_sparse.ops.gather_cols.triton:aot_launches",
        ),
        Backend(
            "native",
            "dejavu_sparse.ops.gather_cols.native:gather_cols",
            device_types=("cpu",),  # float32/bfloat16; other dtypes go on to ``chunked``
            requires=(),
            interpretable=False,
        ),
        Backend(
            "chunked",
            "dejavu_sparse.ops.gather_cols.chunked:gather_cols",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="dejavu_sparse.ops.gather_cols.cases:cases",
)


def fallback_key(x: torch.Tensor, weight_t: torch.Tensor) -> str:
    """The dense-fallback table entry (``fallback.py``) of the backend that serves this call:
    ``"cols_native"`` / ``"cols_native_bf16"`` where the C kernel runs, else ``"cols"``."""
    if x.device.type == "cpu" and gather_cols.select("cpu", x.dtype) == "native":
        from .native import fallback_entry, runs_natively

        if runs_natively(x, weight_t):
            return fallback_entry(x.dtype)
    return "cols"


__all__ = ["fallback_key", "gather_cols", "naive"]
