"""GaLoreAdafactor: Adafactor (transformers / fairseq flavour) on projected gradients.

Same arithmetic as ``galore_torch.GaLoreAdafactor`` (itself transformers' Adafactor plus the
projection): factored second moments for 2-D (projected) gradients, relative step sizes,
update clipping by RMS, optional first moment, weight decay scaled by the step's lr.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .base import GaLoreOptimizer, is_galore_group
from .projector import project_back


class GaLoreAdafactor(GaLoreOptimizer):
    """Adafactor with GaLore projection for groups with a ``rank``.

    Under FSDP2 every DTensor parameter (GaLore or not) is updated from its gathered full
    gradient and weight: the factored statistics and the RMS clipping are not elementwise.

    Args are transformers' ``Adafactor``'s. Use ``scale_parameter=False, relative_step=False,
    warmup_init=False, lr=...`` for an external learning-rate schedule.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        *,
        backend: str | None = None,
    ):
        if lr is not None and relative_step:
            raise ValueError("GaLoreAdafactor: cannot combine a manual lr with relative_step=True")
        if warmup_init and not relative_step:
            raise ValueError("GaLoreAdafactor: warmup_init=True requires relative_step=True")
        if lr is None and not relative_step:
            raise ValueError("GaLoreAdafactor: give an lr when relative_step=False")
        if beta1 is not None and not 0.0 <= beta1 < 1.0:
            raise ValueError(f"invalid beta1 {beta1!r}: must be in [0, 1)")
        defaults = {
            "lr": lr,
            "eps": tuple(eps),
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
            "scale_parameter": scale_parameter,
            "relative_step": relative_step,
            "warmup_init": warmup_init,
        }
        super().__init__(params, defaults, backend=backend)

    _elementwise_plain = False

    @staticmethod
    def _get_lr(group: dict, state: dict) -> float:
        rel_step_sz = group["lr"]
        if group["relative_step"]:
            min_step = 1e-6 * state["step"] if group["warmup_init"] else 1e-2
            rel_step_sz = min(min_step, 1.0 / math.sqrt(state["step"]))
        param_scale = 1.0
        if group["scale_parameter"]:
            param_scale = max(group["eps"][1], float(state["RMS"]))
        return param_scale * rel_step_sz

    @staticmethod
    def _rms(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.norm(2) / (tensor.numel() ** 0.5)

    @staticmethod
    def _approx_sq_grad(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        c_factor = col.unsqueeze(-2).rsqrt()
        return torch.mul(r_factor, c_factor)

    def _checked_grad(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        # The factored statistics run in fp32 whatever the gradient dtype; the regular step and
        # the layer-wise hook both read gradients through here.
        grad = super()._checked_grad(p, group)
        return grad.float() if grad.dtype in (torch.float16, torch.bfloat16) else grad

    def _update_param(
        self, p: torch.Tensor, group: dict, grad: torch.Tensor, data: torch.Tensor | None = None
    ) -> None:
        data = p.data if data is None else data
        state = self.state[p]
        state.setdefault("step", 0)
        shape = grad.shape
        factored = len(shape) >= 2
        use_first_moment = group["beta1"] is not None
        if "RMS" not in state:
            if use_first_moment:
                state["exp_avg"] = torch.zeros_like(grad)
            if factored:
                state["exp_avg_sq_row"] = torch.zeros(
                    shape[:-1], dtype=grad.dtype, device=grad.device
                )
                state["exp_avg_sq_col"] = torch.zeros(
                    shape[:-2] + shape[-1:], dtype=grad.dtype, device=grad.device
                )
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
            state["RMS"] = torch.zeros((), dtype=torch.float32, device=grad.device)

        p32 = data.float() if data.dtype in (torch.float16, torch.bfloat16) else data
        state["step"] += 1
        state["RMS"] = self._rms(p32).float()
        lr = self._get_lr(group, state)

        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        update = grad**2 + group["eps"][0]
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
            col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
            update = self._approx_sq_grad(row, col)
            update.mul_(grad)
        else:
            exp_avg_sq = state["exp_avg_sq"]
            exp_avg_sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
            update = exp_avg_sq.rsqrt().mul_(grad)

        update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if use_first_moment:
            exp_avg = state["exp_avg"]
            exp_avg.mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
            update = exp_avg
        if is_galore_group(group):
            update = project_back(
                update,
                state["side"],
                state.get("proj_left"),
                state.get("proj_right"),
                group["scale"],
            )
        if group["weight_decay"] != 0:
            p32.add_(p32, alpha=-group["weight_decay"] * lr)
        p32.add_(-update)
        if data.dtype in (torch.float16, torch.bfloat16):
            data.copy_(p32)
