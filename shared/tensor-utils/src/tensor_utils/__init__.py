"""Shared helpers for the toolkit's packages (no package-specific logic lives here).

- ``tensor_utils.checkpoint``: stream tensors out of safetensors / sharded HF dirs / .pt files,
  write sharded safetensors atomically.
- ``tensor_utils.dispatch``: Triton-or-reference backend selection.
- ``tensor_utils.testing``: tolerances, float64 comparisons, NaN poisoning, hypothesis strategies.
- ``tensor_utils.bench``: timing, peak memory, tagged CSV rows.
- ``tensor_utils.models``: the SmolLM2-135M-Instruct test model (extra ``models``).
"""

__version__ = "0.1.0"
