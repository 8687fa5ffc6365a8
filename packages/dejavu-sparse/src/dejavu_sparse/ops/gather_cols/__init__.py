"""Gathered-column GEMV/GEMM: ``gather_cols(x, weight_t, idx) == x @ weight_t[idx]`` reading only
the selected rows of a transposed weight (``naive.py`` is the contract). Backends: ``triton``
(CUDA), ``chunked`` (plain PyTorch, the CPU default), and the reference."""

from __future__ import annotations

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
            "chunked",
            "dejavu_sparse.ops.gather_cols.chunked:gather_cols",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="dejavu_sparse.ops.gather_cols.cases:cases",
)

__all__ = ["gather_cols", "naive"]
