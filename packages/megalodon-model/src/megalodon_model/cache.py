"""``MegalodonCache``: constant-memory decoding state as a transformers ``Cache``.

Per layer it holds what the reference's inference cache holds: the K/V of the current attention
chunk only (reset at every chunk boundary, so at most ``chunk_size`` tokens), the TimestepNorm
streaming statistics (count, mean, var) and the CEMA hidden state; plus the final TimestepNorm's
statistics. Its size does not grow with the context (``nbytes()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedConfig
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class NormState:
    count: torch.Tensor  # [B] int64
    mean: torch.Tensor  # [B, G] float32
    var: torch.Tensor  # [B, G] float32

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.mean, self.var]


class MegalodonLayerCache(CacheLayerMixin):
    """One layer's state (see the module docstring)."""

    is_compileable = False
    is_croppable = False

    def __init__(self) -> None:
        super().__init__()
        self.norm: NormState | None = None
        self.ema: torch.Tensor | None = None  # [B, D, N, 2] float32

    def lazy_initialization(self, key_states, value_states) -> None:
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        raise NotImplementedError("MegalodonCache is updated by the Megalodon layers themselves")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        held = 0 if self.keys is None else self.keys.shape[-2]
        return held + query_length, 0

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def get_max_length(self) -> int:
        return -1

    def tensors(self) -> list[torch.Tensor]:
        out = [t for t in (self.keys, self.values, self.ema) if t is not None]
        return out + (self.norm.tensors() if self.norm is not None else [])

    def map_batch(self, fn) -> None:
        if self.keys is not None:
            self.keys, self.values = fn(self.keys), fn(self.values)
        if self.ema is not None:
            self.ema = fn(self.ema)
        if self.norm is not None:
            self.norm = NormState(*(fn(t) for t in self.norm.tensors()))

    def reset(self) -> None:
        self.keys = self.values = self.ema = None
        self.norm = None


@dataclass
class _Counters:
    seen: int = 0  # tokens processed so far (padding included)
    final_norm: NormState | None = field(default=None)


class MegalodonCache(Cache):
    """Decoding state of a Megalodon model; pass it to ``forward``/``generate`` as ``cache``
    (``past_key_values`` also accepted). ``get_seq_length()`` is the number of tokens seen."""

    def __init__(self, config: PreTrainedConfig | None = None, num_layers: int | None = None):
        if num_layers is None:
            if config is None:
                raise ValueError("MegalodonCache: pass the model's config or num_layers")
            num_layers = int(config.num_hidden_layers)
        super().__init__(layers=[MegalodonLayerCache() for _ in range(num_layers)])
        self._state = _Counters()

    def layer(self, idx: int) -> MegalodonLayerCache:
        """Layer ``idx``'s state."""
        layer = self.layers[idx]
        if not isinstance(layer, MegalodonLayerCache):
            raise TypeError(f"MegalodonCache: layer {idx} is a {type(layer).__name__}")
        return layer

    # -- what the model reads and writes ----------------------------------------------------

    @property
    def seen_tokens(self) -> int:
        return self._state.seen

    def advance(self, tokens: int) -> None:
        self._state.seen += tokens

    @property
    def final_norm(self) -> NormState | None:
        return self._state.final_norm

    @final_norm.setter
    def final_norm(self, value: NormState | None) -> None:
        self._state.final_norm = value

    # -- transformers Cache API -------------------------------------------------------------

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._state.seen

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.layer(layer_idx).get_mask_sizes(query_length)

    @property
    def is_compileable(self) -> bool:  # type: ignore[override]
        return False

    @property
    def is_croppable(self) -> bool:  # type: ignore[override]
        return False

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None):
        return self._state.seen > 0

    def _map_batch(self, fn) -> None:
        for i in range(len(self.layers)):
            self.layer(i).map_batch(fn)
        if self._state.final_norm is not None:
            self._state.final_norm = NormState(*(fn(t) for t in self._state.final_norm.tensors()))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise ValueError(
            "MegalodonCache cannot be cropped: CEMA and TimestepNorm states cannot be rewound "
            "(assisted / speculative decoding is not supported)"
        )

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self._state = _Counters()

    def tensors(self) -> list[torch.Tensor]:
        out = [t for i in range(len(self.layers)) for t in self.layer(i).tensors()]
        return out + (self.final_norm.tensors() if self.final_norm is not None else [])

    def nbytes(self) -> int:
        """Bytes held by every tensor of the cache."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def __repr__(self) -> str:
        return f"MegalodonCache(layers={len(self.layers)}, seen={self.seen_tokens})"


__all__ = ["MegalodonCache", "MegalodonLayerCache", "NormState"]
