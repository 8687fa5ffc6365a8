"""``cema_step``: one token of CEMA for decoding (takes and returns the state)."""

from tensor_utils.ops import Op

from . import naive

cema_step = Op("megalodon_model::cema_step", reference=naive.cema_step, library=False)

__all__ = ["cema_step"]
