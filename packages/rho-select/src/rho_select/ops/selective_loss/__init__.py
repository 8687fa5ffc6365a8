"""The selective loss's ops: chunked linear + cross entropy that never materializes the full
``[rows x vocab]`` logits, and its backward over the selected rows only.

- ``selective_loss_forward(hidden, weight, labels, chunk_size, ignore_index) -> (loss, lse)``
- ``selective_loss_backward(hidden, weight, labels, lse, row_scale, chunk_size,
  accumulate_fp32) -> (grad_hidden, grad_weight)``

The Triton backend runs for CUDA tensors (when triton imports), the PyTorch reference
elsewhere; ``backend=`` or ``TENSOR_UTILS_BACKEND`` override. ``rho_select.selective_loss`` ties
them together with token selection in one differentiable function.
"""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

_TRITON = "rho_select.ops.selective_loss.triton"

selective_loss_forward = Op(
    "rho_select::selective_loss_forward",
    reference=naive.selective_loss_forward,
    backends=[
        Backend("triton", f"{_TRITON}:selective_loss_forward", aot=f"{_TRITON}:forward_launches")
    ],
    cases="rho_select.ops.selective_loss.cases:forward_cases",
    fake=naive.forward_fake,
)

selective_loss_backward = Op(
    "rho_select::selective_loss_backward",
    reference=naive.selective_loss_backward,
    backends=[
        Backend("triton", f"{_TRITON}:selective_loss_backward", aot=f"{_TRITON}:backward_launches")
    ],
    cases="rho_select.ops.selective_loss.cases:backward_cases",
    fake=naive.backward_fake,
)

__all__ = ["naive", "selective_loss_backward", "selective_loss_forward"]
