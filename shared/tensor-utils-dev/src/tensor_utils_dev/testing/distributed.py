"""Helpers for the two-process FSDP2 tests on the CPU (gloo): availability, spawning the ranks,
and a probe that records which dtypes a ``MixedPrecisionPolicy`` put where."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def fully_shard_available() -> bool:
    """True when ``torch.distributed`` with gloo and FSDP2's ``fully_shard`` are importable."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return False
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def spawn_ranks(worker: Callable[..., None], tmp: Path, world: int = 2) -> dict[str, Any]:
    """Run ``worker(rank, world, init_file, out_dir)`` on ``world`` processes and return what
    rank 0 saved to ``out_dir/rank0.pt``. The worker must live in an importable module (spawn
    imports it by name)."""
    from torch.multiprocessing.spawn import spawn

    spawn(worker, args=(world, str(tmp / "init"), str(tmp)), nprocs=world, join=True)
    return torch.load(tmp / "rank0.pt", weights_only=False)


def probe_mixed_precision(
    model: torch.nn.Module,
    modules: Sequence[tuple[str, torch.nn.Module]],
    run: Callable[[], Any],
) -> dict[str, Any]:
    """Run ``run()`` (a forward returning an output with ``loss`` and ``logits``), backpropagate
    its loss, and record the parameter dtype each named module saw when its forward began, the
    logits' dtype, the stored (sharded) parameter dtypes, the gradient dtypes, and whether the
    loss was finite."""
    seen: list[tuple[str, torch.dtype]] = []

    def recorder(name: str) -> Callable[[torch.nn.Module, Any], None]:
        def record(module: torch.nn.Module, _args: Any) -> None:
            seen.append((name, next(module.parameters()).dtype))

        return record

    handles = [module.register_forward_pre_hook(recorder(name)) for name, module in modules]
    try:
        out = run()
        out.loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return {
        "seen": seen,
        "logits": out.logits.dtype,
        "sharded": {p.dtype for p in model.parameters()},
        "grads": {p.grad.dtype for p in model.parameters() if p.grad is not None},
        "finite": bool(torch.isfinite(out.loss)),
    }
