"""The ``kvprune`` attention function, registered through transformers' ``AttentionInterface``.

For keys coming from a ``KVPruneCache`` layer it runs SDPA on the prompt and then hands the
prompt to the layer for profiling/compression, and ragged decode attention afterwards. For any
other keys (no cache, a ``DynamicCache``) it is plain SDPA, so switching a model to ``kvprune``
changes nothing for other uses. Its mask function is SDPA's.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from .errors import UnsupportedError

ATTN_NAME = "kvprune"


def kvprune_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    handle = getattr(key, "_kvprune", None)
    if handle is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    del key._kvprune
    if kwargs.get("sliding_window") is not None:
        raise UnsupportedError("kvprune does not support sliding-window attention layers")
    layer, phase = handle
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if phase == "prefill":
        out = sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scale, dropout=dropout, **kwargs
        )
        layer.finish_prefill(query, key, value, attention_mask, scale)
        return out
    return layer.decode_attention(query, scale), None


def register() -> None:
    """Register the attention function and its (SDPA) mask function under ``"kvprune"``."""
    AttentionInterface.register(ATTN_NAME, kvprune_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _capture_inputs(module, args, kwargs):
    from .cache import KVPruneCache

    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if isinstance(cache, KVPruneCache):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache._set_inputs(ids, kwargs.get("attention_mask"))


def install(model) -> None:
    """Register ``kvprune``, switch ``model`` to it and hook its forward to see input ids."""
    register()
    if getattr(model.config, "_attn_implementation", None) != ATTN_NAME:
        model.set_attn_implementation(ATTN_NAME)
    if not getattr(model, "_kvprune_hooked", False):
        model.register_forward_pre_hook(_capture_inputs, with_kwargs=True)
        model._kvprune_hooked = True
