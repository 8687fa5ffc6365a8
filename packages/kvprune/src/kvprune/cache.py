"""``KVPruneCache``: the transformers ``Cache`` adapter over ragged per-head storage.

Each layer (``KVPruneLayer``) holds a ``storage.RaggedStore``. Lifecycle, driven by transformers'
generation loop and the ``kvprune`` attention function (``attention``):

1. prompt (first ``update`` of a layer, ``n`` tokens): keys/values pass through untouched and
   the layer is marked pending; the attention function finds it (module ``layer_idx`` + the
   active cache) and calls ``attend``: SDPA over the prompt, then the attention probabilities
   of the policy's last ``profile_window`` query rows are computed, the policy plans the kept
   set and the store is built from it;
2. each decoding step: ``update`` appends the new token to the store, ``attend`` runs
   ``ragged_decode_attention`` over the live rows (Triton kernel on CUDA) and the store updates
   scores and evicts (``rules``), with no host synchronization;
3. a later multi-token call (a conversation's next turn, teacher forcing) runs its tokens one
   at a time through step 2, which is exactly what decoding them would do.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .attention import ATTN_NAME, install
from .errors import UnsupportedError
from .model_check import check_model, head_dim, kv_heads, text_config
from .ops.ragged_decode import ragged_decode_attention
from .policies import FastGen, Policy, Profile, layer_mean_scores
from .report import Report, build_report
from .storage import Arena, RaggedStore
from .tokens import token_classes


def profile_attention(query, key, real, rows: int, scale: float) -> torch.Tensor:
    """Attention probabilities of the last ``rows`` prompt queries, ``[B, H, G, R, n]`` float32
    (causal, padding keys masked; rows of padding are zero)."""
    b, hq, n, d = query.shape
    h = key.shape[1]
    qw = (query[:, :, n - rows :].float() * scale).reshape(b, h, hq // h, rows, d)
    logits = torch.einsum("bhgrd,bhnd->bhgrn", qw, key.float())
    q_pos = torch.arange(n - rows, n, device=query.device)
    banned = torch.arange(n, device=query.device)[None, :] > q_pos[:, None]  # [R, n]
    padded = not bool(real.all())
    banned = banned[None] | ~real[:, None, :] if padded else banned.expand(b, rows, n)
    logits.masked_fill_(banned[:, None, None], float("-inf"))
    attn = torch.softmax(logits, dim=-1)
    if padded:  # a padding row attends to nothing: zero, not NaN
        invalid = ~real[:, n - rows :]
        attn.masked_fill_(invalid[:, None, None, :, None], 0.0)
    return attn


class KVPruneLayer(CacheLayerMixin):
    is_compileable = False
    is_croppable = False
    is_sliding = False

    def __init__(self, owner: KVPruneCache, layer_idx: int):
        super().__init__()
        self.owner = owner
        self.layer_idx = layer_idx
        self.seen = 0  # tokens seen by this layer, padding included (transformers' length)
        self.store = RaggedStore(
            slack=owner.slack, reserve=owner.reserve, score_mode=owner.policy.score_mode
        )
        self.pending: tuple | None = None  # what the next attention call does

    # -- CacheLayerMixin API -------------------------------------------------------------
    def lazy_initialization(self, key_states, value_states, *args, **kwargs) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.is_initialized = True

    def get_seq_length(self, *args, **kwargs) -> int:
        return self.seen

    def get_mask_sizes(self, query_length, *args, **kwargs) -> tuple[int, int]:
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.seen + q, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.__init__(self.owner, self.layer_idx)

    def reorder_cache(self, beam_idx) -> None:
        raise UnsupportedError(
            "kvprune caches cannot be reordered: beam search (num_beams > 1) is not supported"
        )

    def crop(self, tokens_to_remove: int) -> None:
        raise UnsupportedError(
            "kvprune caches cannot be cropped (assisted/speculative decoding is not supported)"
        )

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.seen:
            raise UnsupportedError("kvprune caches cannot be expanded after the prompt")

    def batch_select_indices(self, indices) -> None:
        if self.seen:
            raise UnsupportedError("kvprune caches cannot drop batch rows after the prompt")

    def offload(self):
        raise UnsupportedError("kvprune caches do not support offloading")

    prefetch = offload

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        owner = self.owner
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, _h, q, _d = key_states.shape
        if self.seen == 0:
            owner.begin_prompt(self.layer_idx, b, q)
            self.seen = q
            self.pending = ("prefill",)
            return key_states, value_states
        if not self.store.built:
            raise UnsupportedError(
                f"KVPruneCache needs the '{ATTN_NAME}' attention during the prompt: call the "
                "model the cache was built for (KVPruneCache(model, ...)), not a submodule"
            )
        owner.check_continuation(b, q, self.store.batch)
        if not owner.joined:
            owner.join_layers()
        cls, first = owner.token_classes_now(b, q)
        if q == 1:  # every layer gets the same ``first``: the arena finishes them together
            self.store.append(key_states[:, :, 0], value_states[:, :, 0], first)
            self.pending = ("decode",)
        else:
            self.pending = ("extend", key_states, value_states, cls)
        self.seen += q
        return key_states, value_states

    # -- attention (called by the kvprune attention function) ----------------------------
    def attend(self, module, query, key, value, attention_mask, scale, dropout, kwargs):
        pending, self.pending = self.pending, None
        if kwargs.get("sliding_window") is not None:
            raise UnsupportedError("kvprune does not support sliding-window attention layers")
        phase = pending[0] if pending else None
        if phase == "prefill":
            out = sdpa_attention_forward(
                module, query, key, value, attention_mask, scaling=scale, dropout=dropout, **kwargs
            )
            self.build(query, key, value, scale)
            return out
        if phase == "decode":
            return self.decode_attention(query, scale), None
        assert pending is not None and phase == "extend", "attend called without an update"
        _, k_new, v_new, cls = pending  # "extend": the tokens one at a time
        outs = []
        for t in range(query.shape[2]):
            self.store.append(k_new[:, :, t], v_new[:, :, t], cls[:, t])
            outs.append(self.decode_attention(query[:, :, t : t + 1], scale))
        return torch.cat(outs, 1), None

    def build(self, query, key, value, scale: float, attn=None, shared=None) -> None:
        """Profile the prompt's last ``profile_window`` query rows, plan, build the store.
        ``attn``: those rows' probabilities if already computed (``profile_attention``);
        ``shared``: results other policies computed on the same profile (``Profile.shared``)."""
        owner = self.owner
        real, cls, pos, n_real = owner.prompt_info(query.device)
        r = min(query.shape[2], owner.policy.profile_window)
        if attn is None:
            attn = profile_attention(query, key, real, r, scale)
        row_valid = real[:, query.shape[2] - r :]
        profile = Profile(attn, row_valid, real, pos, cls, n_real, {} if shared is None else shared)
        plan = owner.policy.plan(profile)
        del attn
        self.policy_index = plan.policy.reshape(-1).clone()
        self.policy_names = plan.names
        self.recovery = plan.recovery.reshape(-1).clone()
        self.prompt_real = n_real.clone()
        self.store.build(plan, key, value, cls, pos, n_real)

    def decode_attention(self, query: torch.Tensor, scale: float) -> torch.Tensor:
        """Attention of one new token over the live rows, then score update and eviction.
        ``query`` is ``[B, Hq, 1, D]``; returns ``[B, 1, Hq, D]``."""
        store = self.store
        b, hq, _, d = query.shape
        h = store.n_kv
        q = query.reshape(b * h, hq // h, d).to(store.k_pool.dtype)
        out, weights = ragged_decode_attention(
            q,
            store.k_pool,
            store.v_pool,
            store.offsets,
            store.lengths,
            scale,
            store.max_cap,
            store.needs_scores,
            backend=self.owner.backend,
        )
        if weights is not None and self.owner.policy.layer_scores:
            rows_pos = store.row_positions()
            weights = layer_mean_scores(
                weights, store.row_segments(), rows_pos, rows_pos >= 0, h, b, self.seen
            )
        store.after_step(weights)
        if store.pending and store.defer and self.layer_idx == self.owner.flush_layer:
            self.owner.settle()  # the step's last layer: finish the step for every layer
        return out.reshape(b, hq, d).unsqueeze(1).to(query.dtype)

    # -- introspection -------------------------------------------------------------------
    @property
    def compressed(self) -> bool:
        return self.store.built

    def kept_positions(self, b: int, h: int) -> list[int]:
        self.owner.settle()
        return self.store.kept_positions(b, h)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor this layer holds (what its memory is made of)."""
        if not self.store.built:
            return {}
        self.owner.settle()
        out = self.store.tensors()
        out.update(policy=self.policy_index, recovery=self.recovery, prompt_real=self.prompt_real)
        return out


class KVPruneCache(Cache):
    """Ragged, per-head compressed KV cache for ``model.generate``.

        cache = KVPruneCache(model, AdaptiveFastGen(kept_fraction=0.5), tokenizer)
        out = model.generate(**inputs, cache=cache, max_new_tokens=64)
        print(cache.report().summary())

    The model keeps its attention implementation: only calls that pass this cache run through
    the ``kvprune`` attention. A cache can continue its conversation (a later ``generate`` with
    the longer input, or a multi-token forward); a new batch needs a new cache or ``reset()``.
    ``reserve`` pre-allocates rows per (row, KV head) for that many new tokens: decoding within
    it never reads the device from the host (needed to capture a decode step in a CUDA graph).
    """

    is_kvprune_cache = True
    layers: list[KVPruneLayer]  # narrower than Cache.layers: every layer is a KVPruneLayer

    def __init__(
        self,
        model,
        policy: Policy | None = None,
        tokenizer=None,
        *,
        token_classes_table: torch.Tensor | None = None,
        slack: int = 8,
        reserve: int = 0,
        backend: str | None = None,
    ):
        check_model(model)
        config = text_config(model)
        self.policy = policy if policy is not None else FastGen()
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a kvprune Policy, got {type(self.policy).__name__}")
        if slack < 1:
            raise ValueError(f"slack must be >= 1 (one free row per segment), got {slack}")
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0, got {reserve}")
        if token_classes_table is None:
            if tokenizer is None and self.policy.uses_token_classes:
                raise UnsupportedError(
                    f"{type(self.policy).__name__} keeps special and punctuation tokens: pass "
                    "tokenizer= (or token_classes_table=) so kvprune knows which they are"
                )
            token_classes_table = token_classes(
                tokenizer, vocab_size=config.vocab_size, config=config
            )
        self.slack = int(slack)
        self.reserve = int(reserve)
        self.backend = backend
        self.token_table = token_classes_table.to(torch.int8)
        self._tables: dict = {}
        self.num_kv_heads = kv_heads(config)
        self.head_dim = head_dim(config)
        install(model)
        layers: list[Any] = [KVPruneLayer(self, i) for i in range(config.num_hidden_layers)]
        super().__init__(layers=layers)
        self._inputs: dict = {}
        self._prompt: tuple | None = None
        self.arena: Arena | None = None  # the layers' shared slot metadata, once decoding
        self.joined = False
        self.flush_layer = -1  # the last layer of a step that evicts

    def join_layers(self) -> None:
        """Put the slot metadata of every layer into one ``Arena`` (at the first decoding
        step): each step's metadata upkeep and evictions then run once, for all layers
        together, after the step's last layer."""
        self.joined = True
        members = [layer for layer in self.layers if layer.store.built]
        shapes = {(m.store.pos.shape[0], m.store.pos.device) for m in members}
        if len(members) < 2 or len(shapes) != 1:
            return
        self.arena = Arena([m.store for m in members])
        for m in members:
            m.store.defer = True
        self.flush_layer = members[-1].layer_idx

    def settle(self) -> None:
        """Finish the step the layers left pending (before the cache is read from outside)."""
        if self.arena is not None:
            self.arena.flush()

    def prefill_from(self, states, input_ids, attention_mask=None, scale: float | None = None):
        """Compress a prompt that already ran: ``states[i] = (query, key, value)`` of layer i
        as its attention saw them (``[B, H, n, D]``, keys after RoPE). The same cache a
        ``generate`` prefill would build, without running the model again (``prefill_all``
        compresses one prefill into several caches)."""
        prefill_all([self], states, input_ids, attention_mask, scale)

    # -- the attention function's protocol ------------------------------------------------
    def set_inputs(self, input_ids, attention_mask) -> None:
        seen = self.layers[0].seen
        if seen and input_ids is not None and input_ids.shape[-1] == 0:
            raise UnsupportedError(
                f"kvprune: the call adds no tokens to this cache, which holds {seen}: a new "
                "prompt needs a new KVPruneCache (or cache.reset())"
            )
        self._inputs = {"input_ids": input_ids, "attention_mask": attention_mask}

    def pending_layer(self, layer_idx) -> KVPruneLayer | None:
        if layer_idx is None or not 0 <= layer_idx < len(self.layers):
            return None
        layer = self.layers[layer_idx]
        return layer if layer.pending is not None else None

    # -- inputs ---------------------------------------------------------------------------
    def _ids(self) -> torch.Tensor:
        ids = self._inputs.get("input_ids")
        if ids is None:
            raise UnsupportedError(
                "kvprune needs input_ids (token classes decide what is kept); call the model "
                "the cache was built for with input_ids, not inputs_embeds"
            )
        return ids

    def _table(self, device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = self.token_table.to(device)
        return self._tables[device]

    def begin_prompt(self, layer_idx: int, batch: int, n: int) -> None:
        if layer_idx != 0 and self._prompt is not None:
            return
        ids = self._ids()
        if ids.shape != (batch, n):
            raise UnsupportedError(
                f"kvprune: input_ids {tuple(ids.shape)} do not match the prompt ({batch}, {n})"
            )
        mask = self._inputs.get("attention_mask")
        device = ids.device
        if mask is None:
            real = torch.ones(batch, n, dtype=torch.bool, device=device)
        else:
            real = mask[:, -n:].to(device=device, dtype=torch.bool)
            if not bool(real[:, -1].all()):
                raise UnsupportedError(
                    "kvprune needs left padding (tokenizer.padding_side = 'left'): a prompt "
                    "ends with padding"
                )
            if bool((real[:, :-1] & ~real[:, 1:]).any()):
                raise UnsupportedError(
                    "kvprune: attention_mask must be left padding only (no holes)"
                )
        pos = real.long().cumsum(-1) - 1
        pos = torch.where(real, pos, torch.full_like(pos, -1))
        table = self._table(device)
        cls = table[ids.clamp(0, table.shape[0] - 1)]
        self._prompt = (real, cls, pos, real.sum(-1))

    def prompt_info(self, device):
        if self._prompt is None:
            raise UnsupportedError("kvprune: no prompt has run through this cache yet")
        real, cls, pos, n_real = self._prompt
        return real.to(device), cls.to(device), pos.to(device), n_real.to(device)

    def check_continuation(self, batch: int, q: int, cached_batch: int) -> None:
        if q == 0:
            raise UnsupportedError(
                "kvprune: the call adds no tokens to this cache (a prompt no longer than what "
                "it holds); a new prompt needs a new KVPruneCache (or cache.reset())"
            )
        if batch != cached_batch:
            raise UnsupportedError(
                f"this KVPruneCache holds a batch of {cached_batch} rows; a new batch of "
                f"{batch} needs a new cache (or cache.reset())"
            )
        if q > 1:  # a multi-token continuation must not add padding inside the sequence
            mask = self._inputs.get("attention_mask")
            if mask is not None and not bool(mask[:, -q:].bool().all()):
                raise UnsupportedError(
                    "kvprune: a continuation cannot contain padding (continue each row alone)"
                )

    def token_classes_now(self, batch: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The classes of the call's last ``q`` tokens ``[B, q]`` and of the first of them
        ``[B]``, computed once per call (every layer gets the same tensors)."""
        memo = self._inputs.get("classes")
        if memo is not None and memo[0] == (batch, q):
            return memo[1], memo[2]
        ids = self._ids()
        if ids.shape[0] != batch or ids.shape[1] < q:
            raise UnsupportedError(f"kvprune: unexpected input_ids {tuple(ids.shape)}")
        table = self._table(ids.device)
        cls = table[ids[:, -q:].clamp(0, table.shape[0] - 1)]
        first = cls[:, 0]
        self._inputs["classes"] = ((batch, q), cls, first)
        return cls, first

    # -- Cache API overrides -------------------------------------------------------------
    def reorder_cache(self, beam_idx):
        raise UnsupportedError(
            "kvprune caches cannot be reordered: beam search (num_beams > 1) is not supported"
        )

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove == 0 and all(layer.seen == 0 for layer in self.layers):
            return
        raise UnsupportedError(
            "kvprune caches cannot be cropped (assisted/speculative decoding is not supported)"
        )

    def reset(self):
        for layer in self.layers:
            layer.reset()
        self._prompt = None
        self._inputs = {}
        self.arena = None
        self.joined = False
        self.flush_layer = -1

    # -- accounting ----------------------------------------------------------------------
    def memory(self) -> dict[str, int]:
        """Bytes held: ``kv_allocated`` (pools, growth slack included), ``kv_live`` (live rows
        only), ``metadata`` (per-slot positions/scores/flags, per-row slot index, per-segment
        arrays; each layer's share of the metadata arena its evicting layers share)."""
        self.settle()
        kv_alloc = kv_live = meta = 0
        for layer in self.layers:
            if not layer.compressed:
                continue
            store = layer.store
            row = store.k_pool.shape[1] * store.k_pool.element_size()
            kv_alloc += store.k_pool.nbytes + store.v_pool.nbytes
            kv_live += 2 * row * int(store.lengths.sum())
            meta += sum(
                t.nbytes for k, t in layer.tensors().items() if k not in ("k_pool", "v_pool")
            )
        return {"kv_allocated": kv_alloc, "kv_live": kv_live, "metadata": meta}

    def report(self) -> Report:
        self.settle()
        return build_report(self)


def prefill_all(caches, states, input_ids, attention_mask=None, scale: float | None = None):
    """``prefill_from`` for several caches of one model (one policy each): layer by layer,
    the profiled attention of each distinct profile window is computed once and shared by
    every cache that needs it, and so are the results policies can share on it (FastGen's
    rungs at several thresholds or budgets), so comparing policies on one prompt costs one
    profile."""
    groups: list[torch.Tensor] = []  # caches with equal token tables share planning results
    group_of = []
    for cache in caches:
        cache.reset()
        cache.set_inputs(input_ids, attention_mask)
        same = [i for i, t in enumerate(groups) if torch.equal(t, cache.token_table)]
        if not same:
            groups.append(cache.token_table)
        group_of.append(same[0] if same else len(groups) - 1)
    for i, (query, key, value) in enumerate(states):
        s = scale or query.shape[-1] ** -0.5
        attn: dict[int, torch.Tensor] = {}
        shared: dict[tuple[int, int], dict] = {}
        for cache, group in zip(caches, group_of, strict=True):
            layer = cache.layers[i]
            layer.update(key, value)
            layer.pending = None
            r = min(query.shape[2], cache.policy.profile_window)
            if r not in attn:
                real = cache.prompt_info(query.device)[0]
                attn[r] = profile_attention(query, key, real, r, s)
            memo = shared.setdefault((r, group), {})
            layer.build(query, key, value, s, attn=attn[r], shared=memo)
        del attn, shared


__all__ = ["KVPruneCache", "KVPruneLayer", "check_model", "prefill_all", "profile_attention"]
