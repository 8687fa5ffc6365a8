"""GaLoreAdamW: AdamW on projected gradients for GaLore groups, plain AdamW for the rest."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .base import GaLoreOptimizer, is_galore_group
from .ops.adam_step import projected_adam_step


def check_adam_hparams(
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    if not lr >= 0.0:
        raise ValueError(f"invalid learning rate {lr!r}: must be >= 0")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"invalid betas {betas!r}: both must be in [0, 1)")
    if not eps >= 0.0:
        raise ValueError(f"invalid eps {eps!r}: must be >= 0")
    if not weight_decay >= 0.0:
        raise ValueError(f"invalid weight_decay {weight_decay!r}: must be >= 0")


def adam_step_size(group: dict, step: int) -> float:
    """HF-style: the bias corrections folded into the step size (galore-torch's formula)."""
    beta1, beta2 = group["betas"]
    step_size = group["lr"]
    if group.get("correct_bias", True):
        step_size = step_size * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
    return step_size


class GaLoreAdamW(GaLoreOptimizer):
    """AdamW with GaLore gradient projection, drop-in for ``galore_torch.GaLoreAdamW``.

    Groups with a ``rank`` (see :mod:`galore_optim.base` for every key) keep Adam moments of
    the projected gradient; other groups are plain AdamW. The arithmetic is galore-torch 1.0's
    (HF AdamW: ``eps`` added to ``sqrt(v)``, bias correction in the step size, decoupled weight
    decay after the update), so with ``solver="exact"`` (the default) it reproduces galore-torch's
    updates to float rounding. On CUDA the step runs as Triton kernels (``backend="reference"``
    forces the PyTorch path).

    Args:
        params: parameters or param groups (e.g. from :func:`galore_optim.galore_param_groups`).
        lr, betas, eps, weight_decay, correct_bias: as in galore-torch / transformers' AdamW.
        backend: ``None``/``"auto"`` (Triton on CUDA), ``"reference"`` or ``"triton"``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        *,
        backend: str | None = None,
    ):
        check_adam_hparams(lr, betas, eps, weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults, backend=backend)

    def _update_param(
        self, p: torch.Tensor, group: dict, grad: torch.Tensor, data: torch.Tensor | None = None
    ) -> None:
        data = p.data if data is None else data
        state = self.state[p]
        state.setdefault("step", 0)
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.contiguous_format)
            state["exp_avg_sq"] = torch.zeros_like(grad, memory_format=torch.contiguous_format)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        galore = is_galore_group(group)
        left, right = state.get("proj_left"), state.get("proj_right")
        decay = group["lr"] * group["weight_decay"] if group["weight_decay"] > 0.0 else 0.0
        grad = grad.contiguous()
        projected_adam_step(
            data,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            left,
            right,
            state["side"] if galore else "none",
            beta1,
            beta2,
            group["eps"],
            adam_step_size(group, state["step"]),
            group["scale"] if galore else 1.0,
            decay,
            backend=self._backend_for(data, grad, state["exp_avg"], state["exp_avg_sq"]),
        )
