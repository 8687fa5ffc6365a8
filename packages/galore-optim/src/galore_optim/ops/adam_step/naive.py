"""Reference (plain PyTorch) projected Adam step. This is the spec the Triton kernel follows.

The arithmetic and its order are galore-torch 1.0's (HF-style AdamW: ``eps`` added to
``sqrt(v)``, bias correction folded into ``step_size``, decoupled weight decay applied *after*
the update with the group lr), so this path reproduces galore-torch to float rounding.
"""

from __future__ import annotations

import torch

from ...projector import project_back


def apply_update(
    weight: torch.Tensor,
    update: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    side: str,
    step_size: float,
    scale: float,
    decay: float,
) -> None:
    """In place: ``W -= step_size * back(update)``, then ``W -= decay * W``.

    ``back`` is ``scale * project_back(update)`` for ``side`` in left/right/full, and
    ``scale * update`` for ``side == "none"`` (a plain, full-rank parameter).
    """
    if side == "none":
        full = update * scale if scale != 1.0 else update
    else:
        full = project_back(update, side, left, right, scale)
    weight.add_(full.to(weight.dtype), alpha=-step_size)
    if decay != 0.0:
        weight.add_(weight, alpha=-decay)


def adam_moments(
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> torch.Tensor:
    """In place moment update; returns ``exp_avg / (sqrt(exp_avg_sq) + eps)``."""
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    return exp_avg / denom


def projected_adam_step(
    weight: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    side: str,
    beta1: float,
    beta2: float,
    eps: float,
    step_size: float,
    scale: float,
    decay: float,
) -> None:
    """One Adam step on a (projected) gradient, written into ``weight``, ``exp_avg``,
    ``exp_avg_sq`` in place. ``grad`` is the low-rank gradient (or the full one for
    ``side == "none"``); ``decay`` is ``lr * weight_decay``."""
    norm = adam_moments(grad, exp_avg, exp_avg_sq, beta1, beta2, eps)
    apply_update(weight, norm, left, right, side, step_size, scale, decay)
