"""Reference expert linear: a readable per-expert loop (the spec of every backend).

``expert_linear(x, weight, sorted_pair, expert_offsets, input_order=, output_order=)`` computes,
for every (token, choice) pair ``p`` routed to expert ``e(p)``::

    y[p] = x[source(p)] @ weight[e(p)].T          weight: [E, out, in] (released layout)

``input_order`` says where pair ``p``'s input row lives in ``x``:

- ``"token"``: ``x`` is ``[T, in]``; pair ``p = t * k + j`` reads row ``t`` (MoE input, MoA map)
- ``"pair"``: ``x`` is ``[T * k, in]`` in pair order (MoA reduce: one attention output per pair)
- ``"sorted"``: ``x`` is ``[T * k, in]`` already grouped by expert (the second MLP matmul)

``output_order`` is ``"pair"`` (``[T * k, out]`` in pair order) or ``"sorted"`` (grouped by
expert, to feed the next matmul without a scatter). ``sorted_pair``/``expert_offsets`` come from
``jetmoe_model.routing.sort_by_expert``. This loop reads the offsets on the host (one sync), like
transformers' port; the grouped backends do not.
"""

from __future__ import annotations

import torch

INPUT_ORDERS = ("token", "pair", "sorted")
OUTPUT_ORDERS = ("pair", "sorted")


def check_args(x, weight, sorted_pair, expert_offsets, input_order, output_order) -> int:
    """Validate shapes and orders; return ``k`` (choices per token) for token-order input."""
    if input_order not in INPUT_ORDERS:
        raise ValueError(f"input_order {input_order!r} is not one of {', '.join(INPUT_ORDERS)}")
    if output_order not in OUTPUT_ORDERS:
        raise ValueError(f"output_order {output_order!r} is not one of {', '.join(OUTPUT_ORDERS)}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [rows, in], got shape {tuple(x.shape)}")
    if weight.dim() != 3:
        raise ValueError(f"weight must be 3-D [experts, out, in], got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[2]:
        raise ValueError(
            f"x has {x.shape[1]} features but weight expects {weight.shape[2]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    if x.dtype != weight.dtype:
        raise ValueError(f"x dtype {x.dtype} != weight dtype {weight.dtype}")
    if sorted_pair.dim() != 1 or expert_offsets.dim() != 1:
        raise ValueError("sorted_pair and expert_offsets must be 1-D")
    if expert_offsets.numel() != weight.shape[0]:
        raise ValueError(
            f"expert_offsets has {expert_offsets.numel()} entries for {weight.shape[0]} experts"
        )
    pairs = sorted_pair.numel()
    if input_order == "token":
        if x.shape[0] == 0:
            if pairs:
                raise ValueError(f"{pairs} pairs routed but x has no rows")
            return 1
        if pairs % x.shape[0]:
            raise ValueError(f"{pairs} pairs is not a multiple of the {x.shape[0]} tokens in x")
        return pairs // x.shape[0]
    if x.shape[0] != pairs:
        raise ValueError(f"input_order={input_order!r} needs {pairs} rows in x, got {x.shape[0]}")
    return 1


def source_rows(sorted_pair: torch.Tensor, input_order: str, k: int) -> torch.Tensor | None:
    """Row of ``x`` read by each sorted pair (None: ``x`` is already in sorted order)."""
    if input_order == "sorted":
        return None
    return sorted_pair // k if input_order == "token" else sorted_pair


def expert_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
    *,
    input_order: str = "token",
    output_order: str = "pair",
) -> torch.Tensor:
    k = check_args(x, weight, sorted_pair, expert_offsets, input_order, output_order)
    rows = source_rows(sorted_pair, input_order, k)
    x_sorted = x if rows is None else x.index_select(0, rows)
    outputs = []
    start = 0
    for expert, end in enumerate(expert_offsets.tolist()):
        outputs.append(x_sorted[start:end] @ weight[expert].T)
        start = end
    y_sorted = torch.cat(outputs, dim=0) if outputs else x.new_zeros(0, weight.shape[1])
    if output_order == "sorted":
        return y_sorted
    return y_sorted.new_zeros(y_sorted.shape).index_copy(0, sorted_pair, y_sorted)


__all__ = [
    "INPUT_ORDERS",
    "OUTPUT_ORDERS",
    "check_args",
    "expert_linear",
    "source_rows",
]
