"""Gathered channel blocks: ``gather_blocks(x, weight_t, keep, block_size)`` multiplies ``x`` by
the rows of a transposed weight that lie in the kept blocks of ``block_size`` consecutive
rows, reading only those (``naive.py`` is the contract). Backends: ``runs`` (plain PyTorch, the
CPU default: one product per run of consecutive kept blocks over a view of the weight, so every
read is a contiguous stream), ``expanded`` (the block-expanded row indices through
``gather_cols``, whose Triton kernel serves CUDA), and the reference."""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

gather_blocks = Op(
    "dejavu_sparse::gather_blocks",
    reference=naive.gather_blocks,
    backends=[
        Backend(
            "runs",
            "dejavu_sparse.ops.gather_blocks.runs:gather_blocks",
            device_types=("cpu",),
            requires=(),
            interpretable=False,
        ),
        Backend(
            "expanded",
            "dejavu_sparse.ops.gather_blocks.expanded:gather_blocks",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="dejavu_sparse.ops.gather_blocks.cases:cases",
)

__all__ = ["gather_blocks", "naive"]
