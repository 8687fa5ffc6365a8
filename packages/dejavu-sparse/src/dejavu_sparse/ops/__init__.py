"""Sparse GEMV/GEMM ops: gathered rows (output sparsity), gathered columns (input sparsity) and
gathered channel blocks (input sparsity in whole blocks of consecutive channels)."""

from .gather_blocks import gather_blocks
from .gather_cols import gather_cols
from .gather_rows import gather_rows

__all__ = ["gather_blocks", "gather_cols", "gather_rows"]
