"""Data parallelism without wrappers: every rank holds the whole (small) trainable set, computes
its shard's loss divided by the global count, and gradients are summed across ranks. Works under
``torch.distributed`` launched by ``torchrun`` or ``accelerate launch`` (any backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> None:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the
    environment (gloo on the CPU, nccl on CUDA); a no-op for a single process."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def shard(items: Sequence, *, group: int = 1) -> list:
    """This rank's contiguous share of ``items``, in whole groups of ``group`` items."""
    rank, size = world()
    n_groups = len(items) // group
    per = -(-n_groups // size)
    lo, hi = min(rank * per, n_groups) * group, min((rank + 1) * per, n_groups) * group
    return list(items[lo:hi])


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a new tensor; the input is unchanged)."""
    if not is_distributed():
        return x.clone()
    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's 1-D tensor along dim 0 (ragged lengths allowed)."""
    if not is_distributed():
        return x
    n = torch.tensor([x.numel()], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(width, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x.reshape(-1)
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def sum_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks in one flat buffer (missing gradients count as zero)."""
    if not is_distributed():
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
