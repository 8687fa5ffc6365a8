"""Sparse GEMV/GEMM ops: gathered rows (output sparsity), gathered columns (input sparsity),
thresholded inputs (TEAL: selection and gathered columns in one op) and gathered channel blocks
(input sparsity in whole blocks of consecutive channels)."""

from .gather_blocks import gather_blocks
from .gather_cols import gather_cols
from .gather_rows import gather_rows
from .threshold_cols import threshold_cols

__all__ = ["gather_blocks", "gather_cols", "gather_rows", "threshold_cols"]
