"""Data-parallel, fully sharded training with PyTorch's FSDP2 (``torch.distributed.fsdp``).

``shard_model`` applies ``fully_shard`` to every decoder block and then to the root (the
embedding, the final norm and the LM head, tied or not, live in the root group; the sharding is
``tensor_utils.distributed``), and points the model's router losses at the data-parallel group so
the load-balancing and z-losses are those of the whole global batch. Launch with ``torchrun``;
``examples/train_fsdp.py`` is a complete loop.
"""

from __future__ import annotations

from torch import nn

from tensor_utils import distributed as _fsdp2
from tensor_utils.distributed import enable_checkpointing, mixed_precision


def shard_model(
    model: nn.Module,
    *,
    mesh=None,
    mp_policy=None,
    reshard_after_forward: bool = True,
    gradient_checkpointing: bool = False,
    aggregate_router_losses: bool = True,
) -> nn.Module:
    """Shard a JetMoE model (``JetMoEForCausalLM``, ``JetMoEModel``, ...) in place with FSDP2.

    ``mesh``, ``mp_policy``, ``reshard_after_forward``, ``gradient_checkpointing``: as
    ``tensor_utils.distributed.shard_model``. ``aggregate_router_losses``: sum the router
    statistics over the data-parallel group, so ``aux_loss`` and ``z_loss`` equal the losses of
    the whole global batch (the gradients too, once FSDP averages them over the ranks).

    Call after ``torch.distributed.init_process_group`` and after moving the model to this rank's
    device; build the optimizer afterwards (its parameters are the sharded DTensors).
    """
    import torch.distributed as dist

    _fsdp2.shard_model(
        model,
        mesh=mesh,
        mp_policy=mp_policy,
        reshard_after_forward=reshard_after_forward,
        gradient_checkpointing=gradient_checkpointing,
    )
    if aggregate_router_losses and hasattr(model, "router_loss_group"):
        group = mesh.get_group() if mesh is not None else dist.group.WORLD
        model.router_loss_group = group  # type: ignore[assignment]
    return model


__all__ = ["enable_checkpointing", "mixed_precision", "shard_model"]
