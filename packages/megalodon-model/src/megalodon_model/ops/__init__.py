"""Megalodon's ops, each a ``tensor_utils.ops.Op``: ``cema`` (complex EMA over a sequence, four
ways), ``cema_step`` (one decoding step) and ``timestep_norm`` (causal cumulative group norm)."""

from .cema import cema
from .cema_step import cema_step
from .timestep_norm import timestep_norm

__all__ = ["cema", "cema_step", "timestep_norm"]
