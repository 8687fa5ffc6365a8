"""One-call generation with a compressed cache: ``(output_ids, report) = generate(...)``."""

from __future__ import annotations

import inspect

from .cache import KVPruneCache
from .errors import UnsupportedError
from .policies import Policy

_UNSUPPORTED = {
    "num_beams": "beam search",
    "assistant_model": "assisted decoding",
    "prompt_lookup_num_tokens": "prompt-lookup decoding",
    "penalty_alpha": "contrastive search",
}


def cache_kwarg(model) -> str:
    """The name ``model.forward``/``generate`` use for the cache (``cache`` in recent
    transformers, ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def check_generation_kwargs(model, kwargs: dict) -> None:
    config = getattr(model, "generation_config", None)
    for name, what in _UNSUPPORTED.items():
        value = kwargs.get(name, getattr(config, name, None) if name == "num_beams" else None)
        if name == "num_beams":
            if value is not None and int(value) > 1:
                raise UnsupportedError(f"kvprune does not support {what} (num_beams={value})")
        elif value is not None:
            raise UnsupportedError(f"kvprune does not support {what} ({name} was given)")


def generate(
    model,
    input_ids=None,
    *,
    policy: Policy | None = None,
    tokenizer=None,
    token_classes_table=None,
    **kwargs,
):
    """``model.generate(input_ids, **kwargs)`` with a ``KVPruneCache`` (FastGen T=0.95 by
    default); returns ``(output_ids, report)``. Greedy and sampling, any batch size (left
    padding); beam search, assisted and contrastive decoding raise ``UnsupportedError``."""
    check_generation_kwargs(model, kwargs)
    cache = KVPruneCache(model, policy, tokenizer, token_classes_table=token_classes_table)
    kwargs[cache_kwarg(model)] = cache
    out = model.generate(input_ids, **kwargs)
    return out, cache.report()
