"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the toolkit's model packages.

``shard_model`` applies ``fully_shard`` to every decoder block of a transformers-style model and
then to the root, optionally with a mixed-precision policy and activation checkpointing; the
model packages (jetmoe-model, megalodon-model) wrap it with what their architecture adds.
Launch with ``torchrun``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _fsdp():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError as err:  # torch < 2.6 kept it under _composable
        raise ImportError("FSDP2 needs torch >= 2.6 (torch.distributed.fsdp.fully_shard)") from err
    return fully_shard, MixedPrecisionPolicy


def mixed_precision(
    param_dtype: torch.dtype | None = torch.bfloat16,
    reduce_dtype: torch.dtype | None = torch.float32,
):
    """An FSDP2 ``MixedPrecisionPolicy``: compute in ``param_dtype`` (the sharded parameters
    and the optimizer stay in their own dtype, float32), reduce gradients in ``reduce_dtype``."""
    _, policy = _fsdp()
    return policy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder block in backward (non-reentrant ``torch.utils.checkpoint``),
    through transformers' ``activation_checkpointing_enable`` (``gradient_checkpointing_enable``
    on transformers releases before it)."""
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
        return
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None:
        raise TypeError(f"{type(model).__name__} has no gradient checkpointing")
    enable(gradient_checkpointing_kwargs=kwargs)


def shard_model(
    model: nn.Module,
    *,
    mesh=None,
    mp_policy=None,
    reshard_after_forward: bool = True,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """Shard a transformers-style decoder (``.model.layers`` or ``.layers``) in place with FSDP2:
    ``fully_shard`` on every decoder block, then on the root (embedding, final norm, LM head).

    ``mesh``: a 1-D ``DeviceMesh`` (default: every rank of the default process group).
    ``mp_policy``: an FSDP2 ``MixedPrecisionPolicy`` (``mixed_precision()``), ``None``: full
    precision. ``reshard_after_forward``: free each block's gathered parameters after its forward
    (ZeRO-3; ``False`` keeps them until backward, ZeRO-2-like). ``gradient_checkpointing``:
    recompute each block in backward (transformers' ``gradient_checkpointing_enable`` with
    non-reentrant ``torch.utils.checkpoint``).

    Call after ``torch.distributed.init_process_group`` and after moving the model to this rank's
    device; build the optimizer afterwards (its parameters are the sharded DTensors).
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("shard_model: call torch.distributed.init_process_group first")
    fully_shard, _ = _fsdp()
    backbone = getattr(model, "model", model)
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"shard_model: {type(model).__name__} has no decoder layers (.model.layers or .layers)"
        )
    if gradient_checkpointing:
        enable_checkpointing(model)
    kwargs: dict[str, Any] = {"reshard_after_forward": reshard_after_forward}
    if mesh is not None:
        kwargs["mesh"] = mesh
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


__all__ = ["enable_checkpointing", "mixed_precision", "shard_model"]
