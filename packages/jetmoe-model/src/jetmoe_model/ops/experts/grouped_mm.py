"""Expert linear through ``torch._grouped_mm`` (gather, one grouped GEMM, scatter).

No host sync: the int32 ``expert_offsets`` go to the kernel as they are. The weight is passed as
the transposed *view* ``weight.transpose(1, 2)`` of the released ``[E, out, in]`` layout (a
contiguous transpose per call costs 2-4x). Backward is PyTorch's derivative of ``_grouped_mm``
(``dW`` as a 2-D x 2-D grouped product over the offsets). ``_grouped_mm`` needs row strides that
are multiples of 16 bytes: ``in`` and ``out`` multiples of 8 for bf16/fp16, of 4 for fp32.
"""

from __future__ import annotations

import torch

from .naive import check_args, source_rows


def available() -> bool:
    return hasattr(torch, "_grouped_mm")


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands a dense gradient on (``_grouped_mm``'s backward rejects
    the stride-0 gradients that ``sum()`` and broadcasting produce)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


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
    if not available():
        raise RuntimeError("backend 'grouped_mm' needs torch._grouped_mm (PyTorch >= 2.8)")
    align = 16 // x.element_size()
    if weight.shape[1] % align or weight.shape[2] % align:
        raise ValueError(
            f"backend 'grouped_mm' needs in/out features that are multiples of {align} for "
            f"{x.dtype}, got weight shape {tuple(weight.shape)}; use backend='triton' or 'reference'"
        )
    rows = source_rows(sorted_pair, input_order, k)
    x_sorted = x if rows is None else x.index_select(0, rows)
    offsets = expert_offsets.to(torch.int32)
    y_sorted = torch._grouped_mm(  # pyright: ignore[reportPrivateImportUsage]  (not in torch's __all__)
        x_sorted.contiguous(), weight.transpose(1, 2), offs=offsets
    )
    if x.requires_grad or weight.requires_grad:
        y_sorted = _ContiguousGrad.apply(y_sorted)
    if output_order == "sorted":
        return y_sorted
    return y_sorted.new_zeros(y_sorted.shape).index_copy(0, sorted_pair, y_sorted)


__all__ = ["available", "expert_linear"]
