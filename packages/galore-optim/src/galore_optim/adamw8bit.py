"""GaLoreAdamW8bit: GaLore AdamW whose moments are stored block-wise in 8 bits.

Implemented here (``galore_optim.ops.quant8``), not through bitsandbytes: no parameter
swapping, no per-parameter ``cuda.synchronize``. On CUDA one Triton kernel dequantizes the
moments, updates them, computes ``N = m / (sqrt(v) + eps)`` and requantizes; a second applies
the back-projection and weight decay to the weight.

Moments of tensors with fewer than ``min_8bit_size`` elements stay fp32 (bitsandbytes' rule).
The update arithmetic is :class:`GaLoreAdamW`'s (HF AdamW, decoupled weight decay after the
update) for every param, GaLore or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .adamw import adam_step_size, check_adam_hparams
from .base import GaLoreOptimizer, is_galore_group
from .ops.adam_step import apply_update
from .ops.quant8 import adam8bit_moments, num_blocks


class GaLoreAdamW8bit(GaLoreOptimizer):
    """8-bit-state GaLore AdamW (signature of ``galore_torch.GaLoreAdamW8bit``'s common args).

    State per quantized tensor: ``exp_avg`` (int8 codes), ``exp_avg_absmax`` (fp32, one per
    256 values), ``exp_avg_sq`` (uint8 codes), ``exp_avg_sq_absmax``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        correct_bias: bool = True,
        *,
        min_8bit_size: int = 4096,
        backend: str | None = None,
    ):
        check_adam_hparams(lr, betas, eps, weight_decay)
        if min_8bit_size < 0:
            raise ValueError(f"min_8bit_size must be >= 0, got {min_8bit_size}")
        self.min_8bit_size = min_8bit_size
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults, backend=backend)

    def _init_moments(self, state: dict, grad: torch.Tensor) -> None:
        if grad.numel() >= self.min_8bit_size:
            dev = grad.device
            state["exp_avg"] = torch.zeros(grad.shape, dtype=torch.int8, device=dev)
            state["exp_avg_sq"] = torch.zeros(grad.shape, dtype=torch.uint8, device=dev)
            blocks = num_blocks(grad.numel())
            state["exp_avg_absmax"] = torch.zeros(blocks, dtype=torch.float32, device=dev)
            state["exp_avg_sq_absmax"] = torch.zeros(blocks, dtype=torch.float32, device=dev)
        else:
            state["exp_avg"] = torch.zeros_like(
                grad, dtype=torch.float32, memory_format=torch.contiguous_format
            )
            state["exp_avg_sq"] = torch.zeros_like(
                grad, dtype=torch.float32, memory_format=torch.contiguous_format
            )

    def _update_param(
        self, p: torch.Tensor, group: dict, grad: torch.Tensor, data: torch.Tensor | None = None
    ) -> None:
        data = p.data if data is None else data
        state = self.state[p]
        state.setdefault("step", 0)
        if "exp_avg" not in state:
            self._init_moments(state, grad)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        galore = is_galore_group(group)
        side = state["side"] if galore else "none"
        left, right = state.get("proj_left"), state.get("proj_right")
        scale = group["scale"] if galore else 1.0
        decay = group["lr"] * group["weight_decay"] if group["weight_decay"] > 0.0 else 0.0
        step_size = adam_step_size(group, state["step"])
        grad = grad.contiguous()
        if "exp_avg_absmax" not in state:  # small tensor: fp32 moments
            self._fp32_step(
                data,
                grad,
                state,
                left,
                right,
                side,
                beta1,
                beta2,
                group["eps"],
                step_size,
                scale,
                decay,
            )
            return
        backend = self._backend_for(data, grad)
        norm = adam8bit_moments(
            grad,
            state["exp_avg"],
            state["exp_avg_absmax"],
            state["exp_avg_sq"],
            state["exp_avg_sq_absmax"],
            beta1,
            beta2,
            group["eps"],
            backend=backend,
        )
        basis = left if left is not None else right
        norm = norm.to(basis.dtype if basis is not None else data.dtype)
        apply_update(data, norm, left, right, side, step_size, scale, decay, backend=backend)

    def _fp32_step(
        self, data, grad, state, left, right, side, beta1, beta2, eps, step_size, scale, decay
    ):
        g = grad.float()
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        norm = m / (v.sqrt() + eps)
        basis = left if left is not None else right
        norm = norm.to(basis.dtype if basis is not None else data.dtype)
        apply_update(
            data,
            norm,
            left,
            right,
            side,
            step_size,
            scale,
            decay,
            backend=self._backend_for(data, norm),
        )
