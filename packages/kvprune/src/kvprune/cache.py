"""``KVPruneCache``: a transformers ``Cache`` whose layers store every (row, KV head) raggedly.

Layout of one layer (``RaggedLayer``): a flat pool ``k_pool``/``v_pool`` ``[N, D]``; segment
``s = b * n_kv_heads + h`` owns rows ``offsets[s] .. offsets[s] + capacity[s] - 1``, of which the
first ``lengths[s]`` are live. Per row of the pool: ``slot_pos`` (position of the token among its
row's real tokens), ``slot_cls`` (token class) and ``slot_score`` (accumulated attention). Pruned
entries are simply not in the pool, so their bytes are freed; a segment that fills up triggers a
re-allocation of the layer's pool with ``max(slack, length // 8)`` spare rows for it.

Lifecycle, driven by transformers' generation loop and the ``kvprune`` attention function:

1. prefill (first ``update``, prompt of ``n`` tokens): keys/values pass through untouched, the
   attention function runs SDPA, then profiles the last ``profile_window`` query rows and calls
   ``finish_prefill``: the policy's plan decides the kept set and the pool is built from it;
2. each decoding step: ``update`` writes the new token into its segments' next free row, the
   attention function runs ``ragged_decode_attention`` (kernel on CUDA) over the live rows, and
   ``after_decode`` adds the returned attention weights to the scores and evicts what the rule
   says (``rules``): local windows slide, heavy hitters compete, special/punctuation stay.
"""

from __future__ import annotations

import weakref

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import rules
from .errors import UnsupportedError
from .ops.ragged_decode import ragged_decode_attention
from .policies import FastGen, Plan, Policy, Profile
from .tokens import token_classes

ATTN_NAME = "kvprune"
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def check_model(model) -> None:
    """Raise ``UnsupportedError`` (one line) unless ``model`` is a supported decoder-only LM."""
    config = text_config(model)
    kind = getattr(config, "model_type", None)
    if getattr(model.config, "is_encoder_decoder", False) or kind not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedError(
            f"kvprune supports Llama-family decoder models ({', '.join(SUPPORTED_MODEL_TYPES)}), "
            f"not model_type={kind!r}"
        )
    layer_types = getattr(config, "layer_types", None) or []
    sliding = any(t != "full_attention" for t in layer_types)
    if kind == "mistral" and getattr(config, "sliding_window", None) is not None:
        sliding = True
    if kind in ("qwen2", "qwen3") and getattr(config, "use_sliding_window", False):
        sliding = True
    if sliding:
        raise UnsupportedError(
            "kvprune does not support sliding-window attention layers "
            f"({kind} with sliding_window={getattr(config, 'sliding_window', None)})"
        )


def _kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


class RaggedLayer(CacheLayerMixin):
    is_compileable = False
    is_croppable = False
    is_sliding = False

    def __init__(self, owner: KVPruneCache, layer_idx: int):
        super().__init__()
        self._owner = weakref.ref(owner)
        self.layer_idx = layer_idx
        self.seen = 0  # tokens seen by this layer, padding included (transformers' length)
        self.k_pool: torch.Tensor | None = None
        self.v_pool: torch.Tensor | None = None
        self.compressed = False

    # -- CacheLayerMixin API -------------------------------------------------------------
    @property
    def owner(self) -> KVPruneCache:
        return self._owner()

    def lazy_initialization(self, key_states, value_states) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

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
            owner._begin_prompt(self.layer_idx, b, q)
            self.seen = q
            key_states._kvprune = (self, "prefill")
            return key_states, value_states
        if not self.compressed:
            raise UnsupportedError(
                f"KVPruneCache needs the '{ATTN_NAME}' attention implementation during the prompt "
                "(build the cache with the model: KVPruneCache(model, ...))"
            )
        if q != 1:
            raise UnsupportedError(
                "kvprune decodes one token per step; multi-token steps on a filled cache "
                f"(got {q} tokens: chunked prefill, assisted decoding, continuing a cache) are "
                "not supported"
            )
        self._append(key_states[:, :, 0], value_states[:, :, 0], owner._token_class_now(b))
        self.seen += 1
        key_states._kvprune = (self, "decode")
        return key_states, value_states

    # -- prefill -------------------------------------------------------------------------
    def finish_prefill(self, query, key, value, attention_mask, scale: float) -> None:
        owner = self.owner
        b, hq, n, d = query.shape
        h = key.shape[1]
        g = hq // h
        real, cls, pos, n_real = owner._prompt_info(n, query.device)
        r = min(n, owner.policy.profile_window)
        qw = query[:, :, n - r :].float().reshape(b, h, g, r, d)
        logits = torch.einsum("bhgrd,bhnd->bhgrn", qw, key.float()) * scale
        rows = torch.arange(n - r, n, device=query.device)
        allowed = (torch.arange(n, device=query.device)[None, :] <= rows[:, None])[None] & real[
            :, None, :
        ]  # [B, R, n]
        logits = logits.masked_fill(~allowed[:, None, None], float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        row_valid = real[:, n - r :]
        attn = torch.where(row_valid[:, None, None, :, None], attn, torch.zeros_like(attn))
        attn = torch.nan_to_num(attn, nan=0.0)
        profile = Profile(attn, row_valid, real, pos, cls, n_real)
        plan = owner.policy.plan(profile)
        del attn, logits
        self._build(plan, key, value, cls, pos, n_real)

    def _build(self, plan: Plan, key, value, cls, pos, n_real) -> None:
        b, h, n, d = key.shape
        keep = plan.keep
        counts = keep.sum(-1).reshape(-1)
        cap = counts + self.owner.slack
        self.lengths = counts.clone()
        self._set_capacity(cap)
        dest = (self.offsets.view(b, h, 1) + keep.long().cumsum(-1) - 1)[keep]
        n_rows = int(cap.sum())
        self.k_pool = key.new_empty(n_rows, d)
        self.v_pool = value.new_empty(n_rows, d)
        self.k_pool[dest] = key[keep]
        self.v_pool[dest] = value[keep]
        self.slot_pos = torch.full((n_rows,), -1, dtype=torch.int32, device=key.device)
        self.slot_cls = torch.zeros(n_rows, dtype=torch.int8, device=key.device)
        self.slot_score = torch.zeros(n_rows, dtype=torch.float32, device=key.device)
        self.slot_pos[dest] = pos.unsqueeze(1).expand(b, h, n)[keep].int()
        self.slot_cls[dest] = cls.unsqueeze(1).expand(b, h, n)[keep]
        self.slot_score[dest] = plan.score[keep].float()
        self.params = {k: v.reshape(-1).clone() for k, v in plan.params.items()}
        # Scores only decide evictions when a segment keeps some but not all of its
        # unprotected tokens (0 < k_f < unbounded); otherwise the kernel may skip the weights.
        k_f = self.params["k_f"]
        self.needs_scores = bool(((k_f > 0) & (k_f < rules.UNBOUNDED)).any())
        self.policy = plan.policy.reshape(-1).clone()
        self.policy_names = plan.names
        self.recovery = plan.recovery.reshape(-1).clone()
        self.next_pos = n_real.clone()  # [B]
        self.n_rows_batch, self.n_kv = b, h
        self.prompt_real = n_real.clone()
        self.compressed = True

    def _set_capacity(self, cap: torch.Tensor) -> None:
        self.capacity = cap
        self.offsets = cap.cumsum(0) - cap
        s = cap.shape[0]
        self.slot_seg = torch.repeat_interleave(
            torch.arange(s, dtype=torch.int32, device=cap.device), cap
        )
        self.max_cap = int(cap.max()) if s else 0

    # -- decoding ------------------------------------------------------------------------
    def _append(self, k_new, v_new, cls_new) -> None:
        b, h, d = k_new.shape
        if bool((self.lengths >= self.capacity).any()):
            self._grow()
        dest = self.offsets + self.lengths
        self.k_pool[dest] = k_new.reshape(b * h, d).to(self.k_pool.dtype)
        self.v_pool[dest] = v_new.reshape(b * h, d).to(self.v_pool.dtype)
        self.slot_pos[dest] = self.next_pos.repeat_interleave(h).int()
        self.slot_cls[dest] = cls_new.repeat_interleave(h).to(torch.int8)
        self.slot_score[dest] = 0.0
        self.lengths += 1

    def _grow(self) -> None:
        need = self.lengths >= self.capacity
        extra = torch.clamp(self.lengths // 8, min=self.owner.slack)
        new_cap = torch.where(need, self.lengths + extra, self.capacity)
        old_off, old_seg = self.offsets, self.slot_seg.long()
        live = (torch.arange(old_seg.shape[0], device=old_seg.device) - old_off[old_seg]) < (
            self.lengths[old_seg]
        )
        src = live.nonzero().squeeze(1)
        self._set_capacity(new_cap)
        dst = self.offsets[old_seg[src]] + (src - old_off[old_seg[src]])
        n_rows = int(new_cap.sum())
        for name in ("k_pool", "v_pool", "slot_pos", "slot_cls", "slot_score"):
            old = getattr(self, name)
            new = old.new_empty((n_rows, *old.shape[1:]))
            if name == "slot_pos":
                new.fill_(-1)
            elif name != "k_pool" and name != "v_pool":
                new.zero_()
            new[dst] = old[src]
            setattr(self, name, new)

    def decode_attention(self, query: torch.Tensor, scale: float) -> torch.Tensor:
        """Attention of the new token over the live rows, then score update and eviction.
        ``query`` is ``[B, Hq, 1, D]``; returns ``[B, 1, Hq, D]``."""
        b, hq, _, d = query.shape
        h = self.n_kv
        q = query.reshape(b, h, hq // h, d).reshape(b * h, hq // h, d).to(self.k_pool.dtype)
        out, weights = ragged_decode_attention(
            q,
            self.k_pool,
            self.v_pool,
            self.offsets,
            self.lengths,
            scale,
            self.max_cap,
            self.needs_scores,
            backend=self.owner.backend,
        )
        self.after_decode(weights)
        return out.reshape(b, hq, d).unsqueeze(1).to(query.dtype)

    def after_decode(self, weights: torch.Tensor | None) -> None:
        if weights is not None:  # None: no segment's eviction depends on scores
            step = weights.sum(-1)
            if self.owner.policy.score_mode == "last":
                self.slot_score.copy_(step)
            else:
                self.slot_score += step
        self._evict(self.next_pos)
        self.next_pos = self.next_pos + 1

    def _live(self) -> torch.Tensor:
        seg = self.slot_seg.long()
        return (torch.arange(seg.shape[0], device=seg.device) - self.offsets[seg]) < self.lengths[
            seg
        ]

    def _evict(self, newest_per_row: torch.Tensor) -> None:
        seg = self.slot_seg.long()
        s_count = self.lengths.shape[0]
        newest = newest_per_row.repeat_interleave(self.n_kv)
        while True:
            live = self._live()
            p = {k: v[seg] for k, v in self.params.items()}
            prot = rules.protected(self.slot_cls, self.slot_pos.long(), newest[seg], p)
            cand = live & ~prot
            count = torch.zeros(s_count, dtype=torch.long, device=seg.device)
            count.index_add_(0, seg[cand], torch.ones_like(seg[cand]))
            over = count > self.params["k_f"]
            if not bool(over.any()):
                return
            cand &= over[seg]
            inf = torch.full_like(self.slot_score, float("inf"))
            key = torch.where(cand, self.slot_score, inf)
            low = inf[:s_count].clone().scatter_reduce_(0, seg, key, "amin")
            tie = cand & (self.slot_score == low[seg])
            big = torch.full_like(seg, rules.UNBOUNDED)
            pos_key = torch.where(tie, self.slot_pos.long(), big)
            oldest = big[:s_count].clone().scatter_reduce_(0, seg, pos_key, "amin")
            victim = (tie & (self.slot_pos.long() == oldest[seg])).nonzero().squeeze(1)
            vseg = seg[victim]
            last = self.offsets[vseg] + self.lengths[vseg] - 1
            for name in ("k_pool", "v_pool", "slot_pos", "slot_cls", "slot_score"):
                t = getattr(self, name)
                t[victim] = t[last]
            self.slot_pos[last] = -1
            self.lengths[vseg] -= 1

    # -- introspection -------------------------------------------------------------------
    def kept_positions(self, b: int, h: int) -> list[int]:
        s = b * self.n_kv + h
        off, n = int(self.offsets[s]), int(self.lengths[s])
        return sorted(int(x) for x in self.slot_pos[off : off + n])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor this layer holds (what its memory is made of)."""
        if not self.compressed:
            return {}
        out = {
            "k_pool": self.k_pool,
            "v_pool": self.v_pool,
            "slot_pos": self.slot_pos,
            "slot_cls": self.slot_cls,
            "slot_score": self.slot_score,
            "slot_seg": self.slot_seg,
            "offsets": self.offsets,
            "lengths": self.lengths,
            "capacity": self.capacity,
            "policy": self.policy,
            "recovery": self.recovery,
            "next_pos": self.next_pos,
            "prompt_real": self.prompt_real,
        }
        out.update({f"param_{k}": v for k, v in self.params.items()})
        return out


class KVPruneCache(Cache):
    """Ragged, per-head compressed KV cache for ``model.generate``.

        cache = KVPruneCache(model, FastGen(recovery=0.95), tokenizer)
        out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)
        print(cache.report().summary())

    Building the cache registers the ``kvprune`` attention function and switches ``model`` to
    it (it behaves like SDPA for any other cache). One cache serves one ``generate`` call.
    """

    def __init__(
        self,
        model,
        policy: Policy | None = None,
        tokenizer=None,
        *,
        token_classes_table: torch.Tensor | None = None,
        slack: int = 8,
        backend: str | None = None,
    ):
        from .attention import install

        check_model(model)
        config = text_config(model)
        self.policy = policy if policy is not None else FastGen()
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a kvprune Policy, got {type(self.policy).__name__}")
        if slack < 1:
            raise ValueError(f"slack must be >= 1 (one free row per segment), got {slack}")
        self.slack = int(slack)
        self.backend = backend
        if token_classes_table is None:
            token_classes_table = token_classes(
                tokenizer, vocab_size=config.vocab_size, config=config
            )
        self.token_table = token_classes_table.to(torch.int8)
        self.num_kv_heads = _kv_heads(config)
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        install(model)
        layers = [RaggedLayer(self, i) for i in range(config.num_hidden_layers)]
        super().__init__(layers=layers)
        self._inputs: dict = {}
        self._prompt: tuple | None = None

    # fed by the model's forward pre-hook (attention.install)
    def _set_inputs(self, input_ids, attention_mask) -> None:
        self._inputs = {"input_ids": input_ids, "attention_mask": attention_mask}

    def _ids(self) -> torch.Tensor:
        ids = self._inputs.get("input_ids")
        if ids is None:
            raise UnsupportedError(
                "kvprune needs input_ids (token classes decide what is kept); call the model "
                "the cache was built for with input_ids, not inputs_embeds"
            )
        return ids

    def _begin_prompt(self, layer_idx: int, batch: int, n: int) -> None:
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
        cls = self.token_table.to(device)[ids.clamp(0, self.token_table.shape[0] - 1)]
        self._prompt = (real, cls, pos, real.sum(-1))

    def _prompt_info(self, n: int, device):
        real, cls, pos, n_real = self._prompt
        return real.to(device), cls.to(device), pos.to(device), n_real.to(device)

    def _token_class_now(self, batch: int) -> torch.Tensor:
        ids = self._ids()
        if ids.shape[0] != batch or ids.shape[1] < 1:
            raise UnsupportedError(f"kvprune: unexpected decode input_ids {tuple(ids.shape)}")
        table = self.token_table.to(ids.device)
        return table[ids[:, -1].clamp(0, table.shape[0] - 1)]

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
        super().reset()
        self._prompt = None
        self._inputs = {}

    # -- accounting ----------------------------------------------------------------------
    def memory(self) -> dict[str, int]:
        """Bytes held: ``kv_allocated`` (pools, slack included), ``kv_live`` (live rows only),
        ``metadata`` (per-row positions/classes/scores/segments and per-segment arrays)."""
        kv_alloc = kv_live = meta = 0
        for layer in self.layers:
            if not layer.compressed:
                continue
            row = layer.k_pool.shape[1] * layer.k_pool.element_size()
            kv_alloc += layer.k_pool.nbytes + layer.v_pool.nbytes
            kv_live += 2 * row * int(layer.lengths.sum())
            meta += sum(
                t.nbytes for k, t in layer.tensors().items() if k not in ("k_pool", "v_pool")
            )
        return {"kv_allocated": kv_alloc, "kv_live": kv_live, "metadata": meta}

    def report(self):
        from .report import build_report

        return build_report(self)
