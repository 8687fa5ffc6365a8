"""Thresholded-input GEMV/GEMM (TEAL): ``threshold_cols(x, weight_t, t)`` is
``(where(|x| > t, x, 0) @ weight_t, kept)`` reading only the weight rows of kept inputs
(``naive.py`` is the contract). Backends: ``native`` (the CPU default: selection and product in
one C call, compiled on first use), ``gathered`` (plain PyTorch selection, then ``gather_cols``:
its Triton kernel on CUDA), and the reference."""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

threshold_cols = Op(
    "dejavu_sparse::threshold_cols",
    reference=naive.threshold_cols,
    backends=[
        Backend(
            "native",
            "dejavu_sparse.ops.threshold_cols.native:threshold_cols",
            device_types=("cpu",),  # float32/bfloat16; other dtypes go on to ``gathered``
            requires=(),
            interpretable=False,
        ),
        Backend(
            "gathered",
            "dejavu_sparse.ops.threshold_cols.gathered:threshold_cols",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="dejavu_sparse.ops.threshold_cols.cases:cases",
)

__all__ = ["naive", "threshold_cols"]
