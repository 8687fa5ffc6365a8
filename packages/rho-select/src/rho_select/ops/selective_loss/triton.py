"""Triton backend of the selective loss: fused linear + cross entropy per chunk of rows.

Per chunk, the logits of the chunk's rows come from one matmul (cuBLAS), then one Triton
program per row walks the vocabulary once:

- forward (``_lse_loss_kernel``): online log-sum-exp and the target logit, written straight to
  the row's slot of the ``[rows]`` outputs;
- backward (``_ce_grad_kernel``): ``(softmax - onehot(label)) * row_scale`` over the logits
  buffer, in place, from the forward's log-sum-exp (no second reduction).

The backward's chunks hold only selected rows (non-zero ``row_scale``), so unselected tokens
cost neither the logits matmul nor the two gradient matmuls that follow
(``grad_hidden = g @ W``, ``grad_weight += g.T @ h``). Only one ``[chunk x vocab]`` buffer is
alive at a time; the forward never keeps it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import KernelLaunch

from .naive import chunk_rows

# Vocabulary tile per loop step, and the warps that run it: large vocabularies take 4096-wide
# steps (8 warps: 16 values per thread), small ones 512.
LARGE_VOCAB = 8192
CONFIGS = {512: 4, 4096: 8}


def block_v(vocab: int) -> int:
    return 4096 if vocab >= LARGE_VOCAB else 512


@triton.jit
def _lse_loss_kernel(
    logits_ptr, stride, rows_ptr, labels_ptr, lse_ptr, loss_ptr, V, BLOCK_V: tl.constexpr
):
    i = tl.program_id(0)
    row = tl.load(rows_ptr + i)
    base = logits_ptr + i.to(tl.int64) * stride
    m = float("-inf")
    s = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(base + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    label = tl.load(labels_ptr + row)
    target = tl.load(base + label).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    tl.store(loss_ptr + row, lse - target)


@triton.jit
def _ce_grad_kernel(
    logits_ptr, stride, rows_ptr, labels_ptr, lse_ptr, scale_ptr, V, BLOCK_V: tl.constexpr
):
    i = tl.program_id(0)
    row = tl.load(rows_ptr + i)
    base = logits_ptr + i.to(tl.int64) * stride
    label = tl.load(labels_ptr + row)
    lse = tl.load(lse_ptr + row)
    scale = tl.load(scale_ptr + row)
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        inside = offs < V
        x = tl.load(base + offs, mask=inside, other=0.0).to(tl.float32)
        g = tl.exp(x - lse) * scale
        g = tl.where(offs == label, g - scale, g)
        tl.store(base + offs, g.to(logits_ptr.dtype.element_ty), mask=inside)


def _launch_args(vocab: int) -> tuple[int, int]:
    bv = block_v(vocab)
    return bv, CONFIGS[bv]


def selective_loss_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    rows_total, vocab = hidden.shape[0], weight.shape[0]
    loss = torch.zeros(rows_total, dtype=torch.float32, device=hidden.device)
    lse = torch.zeros(rows_total, dtype=torch.float32, device=hidden.device)
    labels = labels.contiguous()
    rows = (labels != ignore_index).nonzero().squeeze(1)
    step = chunk_rows(chunk_size, rows_total, hidden.shape[1], vocab, hidden.element_size())
    bv, warps = _launch_args(vocab)
    for start in range(0, rows.numel(), step):
        idx = rows[start : start + step]
        logits = hidden.index_select(0, idx) @ weight.t()
        _lse_loss_kernel[(idx.numel(),)](
            logits, logits.stride(0), idx, labels, lse, loss, vocab,
            BLOCK_V=bv, num_warps=warps,  # pyright: ignore[reportCallIssue]
        )  # fmt: skip
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
    vocab = weight.shape[0]
    grad_hidden = torch.zeros_like(hidden)
    acc_dtype = torch.float32 if accumulate_fp32 else weight.dtype
    grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device)
    labels, lse = labels.contiguous(), lse.contiguous().float()
    row_scale = row_scale.contiguous().float()
    rows = (row_scale != 0).nonzero().squeeze(1)
    step = chunk_rows(chunk_size, hidden.shape[0], hidden.shape[1], vocab, hidden.element_size())
    bv, warps = _launch_args(vocab)
    for start in range(0, rows.numel(), step):
        idx = rows[start : start + step]
        h = hidden.index_select(0, idx)
        grad = h @ weight.t()  # becomes d loss / d logits in place
        _ce_grad_kernel[(idx.numel(),)](
            grad, grad.stride(0), idx, labels, lse, row_scale, vocab,
            BLOCK_V=bv, num_warps=warps,  # pyright: ignore[reportCallIssue]
        )  # fmt: skip
        grad_hidden.index_copy_(0, idx, grad @ weight)
        _accumulate(grad_weight, grad.t(), h)
    return grad_hidden, grad_weight.to(weight.dtype)


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b``; half inputs into a float32 ``acc`` go through cuBLAS's float32-output
    product where torch has it, else through a half product added in float32."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
        return
    if acc.is_cuda:
        try:
            torch.addmm(acc, a, b, acc.dtype, out=acc)
            return
        except (TypeError, RuntimeError):
            pass
    acc.add_(a @ b)


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def forward_launches():
    """Every configuration ``_lse_loss_kernel`` launches with (logits dtype x vocab tile)."""
    for name in _DTYPES:
        for bv, warps in CONFIGS.items():
            sig = {
                "logits_ptr": f"*{name}",
                "stride": "i64",
                "rows_ptr": "*i64",
                "labels_ptr": "*i64",
                "lse_ptr": "*fp32",
                "loss_ptr": "*fp32",
                "V": "i32",
            }
            yield KernelLaunch(
                _lse_loss_kernel, sig, {"BLOCK_V": bv}, num_warps=warps, label=f"{name}-{bv}"
            )


def backward_launches():
    """Every configuration ``_ce_grad_kernel`` launches with (logits dtype x vocab tile)."""
    for name in _DTYPES:
        for bv, warps in CONFIGS.items():
            sig = {
                "logits_ptr": f"*{name}",
                "stride": "i64",
                "rows_ptr": "*i64",
                "labels_ptr": "*i64",
                "lse_ptr": "*fp32",
                "scale_ptr": "*fp32",
                "V": "i32",
            }
            yield KernelLaunch(
                _ce_grad_kernel, sig, {"BLOCK_V": bv}, num_warps=warps, label=f"{name}-{bv}"
            )


def aot_launches():
    """Every kernel configuration this backend launches (both ops)."""
    yield from forward_launches()
    yield from backward_launches()
