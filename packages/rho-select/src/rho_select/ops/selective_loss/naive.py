"""Reference of the selective loss's two ops, in plain chunked PyTorch (the spec).

The loss of row ``i`` is the cross entropy of ``logits_i = hidden[i] @ weight.T`` against
``labels[i]``. Neither op ever holds more than ``chunk_size`` rows of logits:

- ``selective_loss_forward``: per-row loss and log-sum-exp of every labelled row (rows whose
  label is ``ignore_index`` get 0 for both and cost nothing), without gradients.
- ``selective_loss_backward``: the gradients of ``sum_i row_scale[i] * loss_i`` with respect
  to ``hidden`` and ``weight``, computed from the forward's log-sum-exp. Only rows with a
  non-zero ``row_scale`` (the selected tokens) are recomputed: unselected rows cost no matmul.

FLOPs in units of one full ``[rows x hidden] @ [hidden x vocab]`` product: forward 1, backward
``3 * selected fraction`` (logits again, grad of hidden, grad of weight), against 3 for full
logits with autograd.
"""

from __future__ import annotations

import torch

# Logits bytes per chunk when the caller leaves chunk_size at 0: at least the size of the hidden
# states (Liger-Kernel's rule) and at least a floor: 64 MiB on GPUs; 256 MiB on the CPU, where
# few large products win (at V=49152, H=576, 8k fp32 tokens: 1024-row chunks 54 s fwd+bwd,
# 256-row chunks 71 s, on a loaded 2-core machine; both far below full logits' memory).
MIN_CHUNK_BYTES = 64 << 20
MIN_CHUNK_BYTES_CPU = 256 << 20
MAX_CHUNK_ROWS = 8192


def chunk_rows(
    chunk_size: int, rows: int, hidden: int, vocab: int, itemsize: int, cpu: bool = False
) -> int:
    """Rows per chunk: ``chunk_size`` when positive, else the automatic rule (a power of two)."""
    if chunk_size > 0:
        return chunk_size
    floor = MIN_CHUNK_BYTES_CPU if cpu else MIN_CHUNK_BYTES
    budget = max(floor, rows * hidden * itemsize)
    target = max(1, budget // max(1, vocab * itemsize))
    return max(1, min(MAX_CHUNK_ROWS, 1 << (target.bit_length() - 1)))


def selective_loss_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, lse)``: float32 ``[rows]`` cross entropy and log-sum-exp of each labelled row of
    ``hidden [rows, hidden] @ weight.T [hidden, vocab]``; 0 for rows labelled ``ignore_index``."""
    rows_total = hidden.shape[0]
    loss = torch.zeros(rows_total, dtype=torch.float32, device=hidden.device)
    lse = torch.zeros(rows_total, dtype=torch.float32, device=hidden.device)
    rows = (labels != ignore_index).nonzero().squeeze(1)
    step = chunk_rows(
        chunk_size, rows_total, hidden.shape[1], weight.shape[0], hidden.element_size()
    )
    for start in range(0, rows.numel(), step):
        idx = rows[start : start + step]
        logits = (hidden.index_select(0, idx) @ weight.t()).float()
        target = logits.gather(1, labels.index_select(0, idx).unsqueeze(1)).squeeze(1)
        # log-sum-exp in place (no second [chunk x vocab] buffer)
        top = logits.amax(1)
        row_lse = logits.sub_(top.unsqueeze(1)).exp_().sum(1).log_().add_(top)
        lse.index_copy_(0, idx, row_lse)
        loss.index_copy_(0, idx, row_lse - target)
    return loss, lse


def selective_loss_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    row_scale: torch.Tensor,
    chunk_size: int,
    accumulate_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_hidden, grad_weight)`` of ``sum_i row_scale[i] * loss_i``; rows whose scale is 0
    get a zero gradient and are never recomputed. ``accumulate_fp32``: sum the weight gradient
    over chunks in float32 (else in the weight's dtype, which saves memory for half weights)."""
    grad_hidden = torch.zeros_like(hidden)
    acc_dtype = torch.float32 if accumulate_fp32 else weight.dtype
    grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device)
    rows = (row_scale != 0).nonzero().squeeze(1)
    step = chunk_rows(
        chunk_size, hidden.shape[0], hidden.shape[1], weight.shape[0], hidden.element_size(),
        cpu=hidden.device.type == "cpu",
    )  # fmt: skip
    for start in range(0, rows.numel(), step):
        idx = rows[start : start + step]
        h = hidden.index_select(0, idx)
        scale = row_scale.index_select(0, idx).float().unsqueeze(1)
        # d loss / d logits = softmax - onehot(label), times the row's scale; built in place
        grad = (h @ weight.t()).float()
        grad.sub_(lse.index_select(0, idx).unsqueeze(1)).exp_().mul_(scale)
        target = labels.index_select(0, idx).unsqueeze(1)
        grad.scatter_add_(1, target, -scale)
        half = grad.to(hidden.dtype)
        grad_hidden.index_copy_(0, idx, half @ weight)
        if accumulate_fp32:
            grad_weight.addmm_(grad.t(), h.float())
        else:
            grad_weight.addmm_(half.t(), h)
    return grad_hidden, grad_weight.to(weight.dtype)


def forward_fake(hidden, weight, labels, chunk_size, ignore_index):
    """Shapes of ``selective_loss_forward`` for the compiler (its sizes are data-dependent)."""
    rows = hidden.shape[0]
    return (
        hidden.new_empty(rows, dtype=torch.float32),
        hidden.new_empty(rows, dtype=torch.float32),
    )


def backward_fake(hidden, weight, labels, lse, row_scale, chunk_size, accumulate_fp32):
    """Shapes of ``selective_loss_backward`` for the compiler."""
    return torch.empty_like(hidden), torch.empty_like(weight)
