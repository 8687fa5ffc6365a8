"""FSDP2 training for Megalodon (``torch.distributed.fsdp.fully_shard``, launched by ``torchrun``).

``shard_model`` applies ``fully_shard`` to every Megalodon block and then to the root (the
embedding, the final timestep norm and the LM head, tied or not, live in the root group). Every
sequence stays whole on one rank (CEMA and the timestep norm run along the sequence), so the data
parallelism is over the batch. ``examples/train_fsdp.py`` is a complete loop. The sharding itself
is ``tensor_utils.distributed``.
"""

from __future__ import annotations

from tensor_utils.distributed import enable_checkpointing, mixed_precision, shard_model

__all__ = ["enable_checkpointing", "mixed_precision", "shard_model"]
