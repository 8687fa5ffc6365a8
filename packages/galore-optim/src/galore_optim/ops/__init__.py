"""Ops with a plain-PyTorch reference (``naive.py``) and a Triton kernel (``triton.py``).

- ``adam_step``: the projected Adam step (moments, normalize, project back, weight decay, write)
  and its second half, ``apply_update``.
- ``quant8``: block-wise 8-bit quantization of Adam moments, and the fused 8-bit moment update.
"""

from .adam_step import apply_update, projected_adam_step
from .quant8 import adam8bit_moments, dequantize_blockwise, quantize_blockwise

__all__ = [
    "adam8bit_moments",
    "apply_update",
    "dequantize_blockwise",
    "projected_adam_step",
    "quantize_blockwise",
]
