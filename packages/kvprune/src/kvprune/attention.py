"""The ``kvprune`` attention function and the model hooks that put it in place per call.

A model that a ``KVPruneCache`` was built for gets two forward hooks (installed once): before a
call whose cache is a kvprune cache, the hook records the call's input ids and attention mask
on the cache, makes it the *active cache* (a context variable) and switches the model's
attention implementation to ``"kvprune"``; after the call (also when it raises) both are put
back. Calls with any other cache, or none, run exactly as before, with the model's own
attention implementation (eager, SDPA or flash attention).

During a kvprune call, the attention function finds its cache layer through the module's
``layer_idx`` and the active cache, and lets that layer attend (SDPA then compression on the
prompt, ragged decode attention afterwards). This module knows caches only through that small
protocol (``is_kvprune_cache``, ``set_inputs``, ``pending_layer``), so it imports no cache code.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

ATTN_NAME = "kvprune"
ACTIVE_CACHE: ContextVar = ContextVar("kvprune_active_cache", default=None)
_STACK = "_kvprune_calls"


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
    cache = ACTIVE_CACHE.get()
    layer = None
    if cache is not None:
        layer = cache.pending_layer(getattr(module, "layer_idx", None))
    if layer is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return layer.attend(module, query, key, value, attention_mask, scale, dropout, kwargs)


def register() -> None:
    """Register the attention function and its (SDPA) mask function under ``"kvprune"``."""
    AttentionInterface.register(ATTN_NAME, kvprune_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _call_cache(args, kwargs):
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache if getattr(cache, "is_kvprune_cache", False) else None


def _before(model, args, kwargs):
    stack = getattr(model, _STACK)
    stack.append(None)  # popped by _after, which also runs when this hook raises
    cache = _call_cache(args, kwargs)
    if cache is not None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache.set_inputs(ids, kwargs.get("attention_mask"))
        config = model.config
        previous = config._attn_implementation
        config._attn_implementation = ATTN_NAME
        stack[-1] = (ACTIVE_CACHE.set(cache), previous)


def _after(model, args, kwargs, output):
    stack = getattr(model, _STACK)
    entry = stack.pop() if stack else None
    if entry is not None:
        token, previous = entry
        model.config._attn_implementation = previous
        ACTIVE_CACHE.reset(token)


def install(model) -> None:
    """Register ``kvprune`` and hook ``model`` (once) so kvprune calls use it."""
    register()
    if getattr(model, _STACK, None) is None:
        setattr(model, _STACK, [])
        model.register_forward_pre_hook(_before, with_kwargs=True)
        model.register_forward_hook(_after, with_kwargs=True, always_call=True)
