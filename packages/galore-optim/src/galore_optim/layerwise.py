"""Layer-wise (optimizer-in-backward) GaLore that keeps gradient accumulation, clipping and
the learning-rate schedule right.

galore-torch's recipe builds one optimizer and one scheduler *per parameter* and steps each in
its post-accumulate-grad hook: every micro-batch becomes an optimizer step, clipping sees no
gradients, and the per-parameter schedulers tick twice per step. Here one
:class:`~galore_optim.base.GaLoreOptimizer` owns every parameter (so one LR scheduler drives
it) and the hooks only *route* gradients:

- GaLore params: each micro-batch's gradient is projected at once and summed in the low-rank
  space (``Pᵀ ΣGᵢ = Σ PᵀGᵢ``); the full gradient is freed in the hook. On a step where the
  basis is refreshed, the full gradient is kept accumulating in ``p.grad`` until the last
  micro-batch so the SVD sees the whole batch's gradient (use ``stagger=True`` so only a few
  matrices refresh on any step).
- Other params: accumulate in ``p.grad`` as usual.
- On the last micro-batch (``accumulation_steps`` backward passes) the param is updated in its
  hook, or, with ``max_grad_norm`` set, its (projected) gradient is parked until
  :meth:`step`, which clips all of them by one global norm and applies the updates.

The clipping norm is the norm of what the optimizer consumes: the projected gradient for
GaLore params (the part of the gradient inside the subspace) and the full gradient for the
rest. Peak gradient memory stays one full gradient per refreshing matrix plus the low-rank ones.

    optimizer = GaLoreAdamW(groups, lr=1e-3)
    layerwise = LayerwiseGaLore(optimizer, accumulation_steps=4, max_grad_norm=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    for batch in loader:
        for micro in batch.split(4):
            (model(micro).loss / 4).backward()
        layerwise.step()          # clip + update (or just checks, without clipping)
        scheduler.step()          # once per optimizer step

Every parameter must receive a gradient in every micro-batch (as in a transformer); a parameter
that misses one makes :meth:`step` raise rather than silently mis-scale.
"""

from __future__ import annotations

import math

import torch

from .base import GaLoreOptimizer, is_galore_group


class LayerwiseGaLore:
    """Hooks a :class:`GaLoreOptimizer`'s parameters for updates during backward.

    Args:
        optimizer: the optimizer holding every trainable parameter (one LR clock).
        accumulation_steps: backward passes per optimizer step.
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping, updates
            happen inside backward).
    """

    def __init__(
        self,
        optimizer: GaLoreOptimizer,
        *,
        accumulation_steps: int = 1,
        max_grad_norm: float | None = None,
    ):
        if not isinstance(optimizer, GaLoreOptimizer):
            raise TypeError(
                f"LayerwiseGaLore needs a GaLoreOptimizer, got {type(optimizer).__name__}"
            )
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(
                f"accumulation_steps must be a positive int, got {accumulation_steps!r}"
            )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            raise NotImplementedError(
                "LayerwiseGaLore runs on one process: under DDP the gradients are all-reduced after "
                "the hooks fire; use the optimizer's regular step() with DDP"
            )
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: float | None = None
        self._group: dict[torch.Tensor, dict] = {}
        self._count: dict[torch.Tensor, int] = {}
        self._low: dict[torch.Tensor, torch.Tensor] = {}
        self._pending: dict[torch.Tensor, torch.Tensor] = {}
        self._handles = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                self._group[p] = group
                self._count[p] = 0
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook))

    def remove(self) -> None:
        """Detach the hooks (the optimizer's regular ``step()`` works again)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @torch.no_grad()
    def _hook(self, p: torch.Tensor) -> None:
        opt, group = self.optimizer, self._group[p]
        grad = opt._checked_grad(p, group)
        self._count[p] += 1
        final = self._count[p] == self.accumulation_steps
        if is_galore_group(group):
            if opt.refresh_due(p, group):
                if not final:
                    return  # keep accumulating the full gradient for the refresh
                if p in self._low:
                    raise RuntimeError("internal: low-rank accumulator on a refresh step")
                update = opt.project_grad(p, group, grad)
            else:
                low = opt.project_grad(p, group, grad)
                if p in self._low:
                    self._low[p].add_(low)
                else:
                    self._low[p] = low
                if not final:
                    p.grad = None
                    return
                update = self._low.pop(p)
        else:
            if not final:
                return
            update = grad
        p.grad = None
        self._count[p] = 0
        if self.max_grad_norm is None:
            opt._update_param(p, group, update)
        else:
            self._pending[p] = update

    @torch.no_grad()
    def step(self) -> float | None:
        """Finish an optimizer step: clip and apply parked updates. Returns the global gradient
        norm when clipping (also kept in ``last_grad_norm``)."""
        partial = [p for p, c in self._count.items() if c != 0]
        if partial:
            p = partial[0]
            raise RuntimeError(
                f"LayerwiseGaLore.step: {len(partial)} parameter(s) (first of shape {tuple(p.shape)}) "
                f"got {self._count[p]} of {self.accumulation_steps} micro-batch gradients"
            )
        if self.max_grad_norm is None:
            self._finish()
            return None
        norms = [u.float().norm() for u in self._pending.values()]
        total = torch.stack(norms).norm().item() if norms else 0.0
        coef = min(1.0, self.max_grad_norm / (total + 1e-6))
        for p, update in self._pending.items():
            if coef < 1.0:
                update.mul_(coef)
            self.optimizer._update_param(p, self._group[p], update)
        self._pending.clear()
        self.last_grad_norm = total if math.isfinite(total) else float("nan")
        self._finish()
        return total

    def _finish(self) -> None:
        # Every gradient was consumed, so this updates nothing; it runs the optimizer's step
        # hooks and tells LR schedulers that the optimizer stepped (one clock).
        self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients are consumed by the hooks; kept for Trainer-style loops."""
        return None
