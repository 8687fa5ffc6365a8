"""Runtime layer shared by the toolkit's packages (nothing specific to one technique lives here).

- ``tensor_utils.ops``: the op registry: a reference plus named backends per op, resolved once
  per device type and dtype, and registered as ``torch.library`` custom ops for ``torch.compile``.
- ``tensor_utils.checkpoint``: stream tensors out of safetensors / sharded HF dirs / .pt files,
  read positional chunks with prefetch, write sharded safetensors with an atomic replace.
- ``tensor_utils.distributed``: FSDP2 sharding of decoder models (``shard_model``).
- ``tensor_utils.version``: ``package_version``, the single source of each ``__version__``.

Test, benchmark and test-model helpers live in the development-only ``tensor_utils_dev``.
"""

from .version import package_version

__version__ = package_version("llm-efficiency-tensor-utils", __file__)
