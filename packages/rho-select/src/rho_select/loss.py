"""The selective language-modeling loss (Rho-1): cross entropy over the selected tokens only.

``selective_loss(hidden_states, lm_head_weight, labels, ref_losses, ratio)`` computes every
labelled token's cross entropy in row chunks (never the full ``[tokens x vocab]`` logits),
ranks tokens by excess loss ``L_current - L_reference``, keeps the top ``ratio`` of them
(:mod:`rho_select.selection`), and returns their mean loss. Backpropagation recomputes the
logits of the selected rows only: the unselected rows cost no gradient matmul.

    out = selective_loss(hidden, model.lm_head.weight, labels, ref_losses, 0.6, shift=True)
    out.loss.backward()
    log(out.selected_fraction, out.selected_loss, out.unselected_loss)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .errors import RhoSelectError
from .ops.selective_loss import selective_loss_backward, selective_loss_forward
from .selection import MODES, check_ratio, select_tokens


class SelectiveLossOutput(NamedTuple):
    """What a training step uses and logs.

    ``loss``: mean cross entropy of the selected tokens (differentiable; under a distributed
    global selection it is scaled so that averaging gradients over ranks, as DDP/FSDP do, gives
    the global mean: ``local sum * world / global count``). ``selected_fraction``: selected /
    labelled tokens (global when the selection was). ``selected_loss`` / ``unselected_loss``:
    mean current loss of this rank's selected / unselected labelled tokens (NaN when there are
    none). ``selected_mask``: bool, the labels' shape (after ``shift``). ``token_losses``: every
    token's current cross entropy (float32, 0 where ignored), detached.
    """

    loss: torch.Tensor
    selected_fraction: torch.Tensor
    selected_loss: torch.Tensor
    unselected_loss: torch.Tensor
    selected_mask: torch.Tensor
    token_losses: torch.Tensor


class _TokenCrossEntropy(torch.autograd.Function):
    """Per-row cross entropy of ``hidden @ weight.T``; the backward recomputes only rows whose
    incoming gradient is non-zero (the selected tokens)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size, ignore_index, accumulate_fp32, backend):
        loss, lse = selective_loss_forward(
            hidden, weight, labels, chunk_size, ignore_index, backend=backend
        )
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk_size, ctx.accumulate_fp32, ctx.backend = chunk_size, accumulate_fp32, backend
        ctx.ignore_index = ignore_index
        ctx.mark_non_differentiable(lse)
        return loss, lse

    @staticmethod
    def backward(ctx, grad_loss, grad_lse):
        hidden, weight, labels, lse = ctx.saved_tensors
        valid = labels != ctx.ignore_index
        scale = torch.where(
            valid, grad_loss.float(), torch.zeros_like(grad_loss, dtype=torch.float32)
        )
        safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
        grad_hidden, grad_weight = selective_loss_backward(
            hidden,
            weight,
            safe_labels,
            lse,
            scale,
            ctx.chunk_size,
            ctx.accumulate_fp32,
            backend=ctx.backend,
        )
        return grad_hidden, grad_weight, None, None, None, None, None


def token_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = 0,
    ignore_index: int = -100,
    accumulate_fp32: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """Differentiable per-row cross entropy ``[rows]`` (float32) of ``hidden [rows, H] @
    weight.T``, chunked; rows with a zero upstream gradient are skipped in the backward."""
    loss, _ = _TokenCrossEntropy.apply(
        hidden, weight, labels, chunk_size, ignore_index, accumulate_fp32, backend
    )
    return loss


def _check_inputs(hidden, weight, labels, ref_losses, ignore_index) -> None:
    """One-line errors for inputs that disagree (eager only: these checks read values)."""
    if hidden.dim() < 2:
        raise RhoSelectError(
            f"hidden_states must be [..., hidden], got shape {tuple(hidden.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise RhoSelectError(
            f"lm_head_weight of shape {tuple(weight.shape)} does not match hidden size "
            f"{hidden.shape[-1]} (expected [vocab, {hidden.shape[-1]}])"
        )
    if hidden.dtype != weight.dtype:
        raise RhoSelectError(
            f"hidden_states ({hidden.dtype}) and lm_head_weight ({weight.dtype}) dtypes differ"
        )
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise RhoSelectError(
            f"labels of shape {tuple(labels.shape)} do not match hidden_states of shape "
            f"{tuple(hidden.shape)} (expected {tuple(hidden.shape[:-1])})"
        )
    if tuple(ref_losses.shape) != tuple(labels.shape):
        raise RhoSelectError(
            f"ref_losses of shape {tuple(ref_losses.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}: reference scores must align with the tokens one to one"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise RhoSelectError(f"labels must be int64 or int32, got {labels.dtype}")
    valid = labels != ignore_index
    vocab = weight.shape[0]
    bad = valid & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        raise RhoSelectError(
            f"{int(bad.sum())} label(s) outside the vocabulary [0, {vocab}) "
            f"(first: {int(labels[bad][0])}); only {ignore_index} marks ignored tokens"
        )
    nonfinite = valid & ~torch.isfinite(ref_losses)
    if bool(nonfinite.any()):
        raise RhoSelectError(
            f"ref_losses are NaN or infinite at {int(nonfinite.sum())} labelled token(s)"
        )


def selective_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    ref_losses: torch.Tensor,
    ratio: float = 0.6,
    *,
    mode: str = "batch",
    threshold: float | None = None,
    shift: bool = False,
    chunk_size: int = 0,
    ignore_index: int = -100,
    group=None,
    global_batch: bool = True,
    generator: torch.Generator | None = None,
    accumulate_fp32: bool = True,
    backend: str | None = None,
) -> SelectiveLossOutput:
    """Rho-1's selective loss over the top ``ratio`` of tokens by excess loss.

    ``hidden_states [..., H]``: final hidden states (after the last norm); ``lm_head_weight
    [V, H]``; ``labels [...]`` (``ignore_index`` never counts); ``ref_losses [...]``: the
    reference model's per-token losses aligned with ``labels``. Position ``i`` of
    ``hidden_states`` predicts ``labels[i]``; with ``shift=True`` the inputs are in the
    Hugging Face layout instead (``labels``/``ref_losses`` aligned with ``input_ids``: position
    ``i`` predicts token ``i + 1``) and are shifted here.

    ``mode``: ``"batch"`` (the paper's; global under ``torch.distributed``), ``"sequence"``,
    ``"threshold"`` (with ``threshold``) or ``"random"`` (control); the count rule and tie
    breaking are in :mod:`rho_select.selection`. ``chunk_size``: rows of logits per chunk (0:
    automatic). ``accumulate_fp32``: sum the weight gradient over chunks in float32.
    ``backend``: ``"reference"`` / ``"triton"`` to force one (leave ``None`` under
    ``torch.compile``).
    """
    if mode not in MODES:
        raise RhoSelectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "threshold":
        ratio = check_ratio(ratio)
    eager = not torch.compiler.is_compiling()
    if eager:
        _check_inputs(hidden_states, lm_head_weight, labels, ref_losses, ignore_index)
    if shift:
        hidden_states = hidden_states[..., :-1, :]
        labels, ref_losses = labels[..., 1:], ref_losses[..., 1:]
    shape = labels.shape
    flat_labels = labels.reshape(-1).to(torch.int64)
    tokens = token_cross_entropy(
        hidden_states.reshape(-1, hidden_states.shape[-1]),
        lm_head_weight,
        flat_labels,
        chunk_size=chunk_size,
        ignore_index=ignore_index,
        accumulate_fp32=accumulate_fp32,
        backend=backend,
    ).view(shape)
    valid = labels != ignore_index
    excess = tokens.detach() - ref_losses.detach().float()
    selection = select_tokens(
        excess,
        valid,
        ratio,
        mode=mode,
        threshold=threshold,
        group=group,
        global_batch=global_batch,
        generator=generator,
    )
    if eager and int(selection.labelled) == 0:
        raise RhoSelectError(f"every label is {ignore_index}: no token to train on")
    mask = selection.mask
    weights = mask.to(tokens.dtype)
    count = selection.selected.clamp(min=1).to(tokens.dtype)
    if selection.world_size > 1:
        count = count / selection.world_size
    loss = (tokens * weights).sum() / count
    detached = tokens.detach()
    unselected = valid & ~mask
    n_sel, n_unsel = mask.sum(), unselected.sum()
    nan = torch.full((), math.nan, dtype=tokens.dtype, device=tokens.device)
    selected_loss = torch.where(n_sel > 0, (detached * weights).sum() / n_sel.clamp(min=1), nan)
    unselected_loss = torch.where(
        n_unsel > 0, (detached * unselected.to(tokens.dtype)).sum() / n_unsel.clamp(min=1), nan
    )
    fraction = selection.selected.to(tokens.dtype) / selection.labelled.clamp(min=1).to(
        tokens.dtype
    )
    return SelectiveLossOutput(loss, fraction, selected_loss, unselected_loss, mask, detached)
