"""Gathered-row GEMV/GEMM: ``gather_rows(x, weight, idx) == x @ weight[idx].T`` computing only
the selected rows (``naive.py`` is the contract). Backends: ``triton`` (CUDA), ``native``
(the CPU default: a small C kernel compiled on first use, float32/bfloat16, batch 1-16),
``inplace`` (plain PyTorch, batch-1 float32 rows read where they lie: where no C compiler
works), ``chunked`` (plain PyTorch, selected rows copied through a cache-sized buffer; every
batch and dtype), and the reference."""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

gather_rows = Op(
    "dejavu_sparse::gather_rows",
    reference=naive.gather_rows,
    backends=[
        Backend(
            "triton",
            "dejavu_sparse.ops.gather_rows.triton:gather_rows",
            aot="dejavu_sparse.ops.gather_rows.triton:aot_launches",
        ),
        Backend(
            "native",
            "dejavu_sparse.ops.gather_rows.native:gather_rows",
            device_types=("cpu",),  # float32/bfloat16, batch <= 16; the rest goes on to inplace
            requires=(),
            interpretable=False,
        ),
        Backend(
            "inplace",
            "dejavu_sparse.ops.gather_rows.inplace:gather_rows",
            device_types=("cpu",),
            requires=(),
            interpretable=False,
        ),
        Backend(
            "chunked",
            "dejavu_sparse.ops.gather_rows.chunked:gather_rows",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="dejavu_sparse.ops.gather_rows.cases:cases",
)

__all__ = ["gather_rows", "naive"]
