"""Sparse GEMV/GEMM ops: gathered rows (output sparsity) and gathered columns (input sparsity)."""

from .gather_cols import gather_cols
from .gather_rows import gather_rows

__all__ = ["gather_cols", "gather_rows"]
