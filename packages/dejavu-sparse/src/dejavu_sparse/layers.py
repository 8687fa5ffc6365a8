"""The sparse forward passes of one decoder layer's MLP and attention, for every mode.

Two paths compute the same function of each token:

- **gathered** (decode steps, one token per row): the selection of each batch row is found, the
  union over the batch decides which weight rows are read, and only those are read, through the
  ``gather_rows`` / ``gather_cols`` ops. Rows outside a row's own selection are masked after the
  gather, so every row gets exactly its own sparse result.
- **masked** (prefill when asked, and quality evaluation): the same selection per token, applied
  as a mask on dense products. Nothing is skipped; it is the reference the gathered path equals.

Modes: ``dejavu`` (predicted top-K MLP neurons and attention heads), ``teal`` (magnitude
thresholds on the input of every linear layer; with ``block`` > 1 on the RMS of each block of that
many consecutive input channels, so every weight read is a contiguous slab), ``cats`` (a
magnitude threshold on the SiLU gate).
Head sparsity computes K and V for every head, so the cache stays complete.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arch import rms
from .ops import gather_blocks, gather_cols, gather_rows, threshold_cols

TEAL_PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class Taps:
    """Residual-stream inputs recorded during the forward pass, for one-block-ahead predictors:
    ``attn_in[l]`` enters layer l's attention block, ``mlp_in[l]`` its MLP block."""

    attn_in: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp_in: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Stats:
    """Weight elements skipped and in total, per block, summed over the tokens seen."""

    mlp_skipped: float = 0.0
    mlp_total: float = 0.0
    attn_skipped: float = 0.0
    attn_total: float = 0.0

    def add(self, block: str, skipped: float, total: float) -> None:
        setattr(self, f"{block}_skipped", getattr(self, f"{block}_skipped") + skipped)
        setattr(self, f"{block}_total", getattr(self, f"{block}_total") + total)

    def summary(self) -> dict[str, float]:
        total = self.mlp_total + self.attn_total
        return {
            "mlp": self.mlp_skipped / self.mlp_total if self.mlp_total else 0.0,
            "attn": self.attn_skipped / self.attn_total if self.attn_total else 0.0,
            "layer": (self.mlp_skipped + self.attn_skipped) / total if total else 0.0,
        }


@dataclass
class LayerState:
    """Everything one layer's sparse forward needs (installed on its modules by ``sparsify``)."""

    layer_idx: int
    mode: str
    taps: Taps
    stats: Stats
    prefill: bool = False
    force_masked: bool = False
    enabled: bool = True  # False: the module's own dense forward (for side-by-side timing)
    oracle: bool = (
        False  # dejavu, masked path: the true top-K instead of the predictors' (evaluation)
    )
    track: bool = True
    # dejavu
    mlp_k: int = 0  # neurons kept per token
    head_k: int = 0  # heads kept per token (0 or num_heads: attention dense)
    mlp_pred: tuple[torch.Tensor, torch.Tensor] | None = None  # (down (r, d), up (I, r))
    lookahead: bool = True  # predictors read one block ahead (else their own block's input)
    head_pred: tuple[torch.Tensor, torch.Tensor] | None = None
    # teal: a threshold on the input of each projection (0: dense)
    teal: dict[str, float] = field(default_factory=dict)
    block: int = 1  # teal: >1 selects whole blocks of this many input channels by their RMS
    # cats: threshold on |silu(gate)|
    cats_t: float = 0.0
    # weights laid out so that selected rows are contiguous
    w: dict[str, torch.Tensor] = field(default_factory=dict)

    def sparse_mlp(self) -> bool:
        if not self.enabled:
            return False
        if self.mode == "dejavu":
            return self.mlp_pred is not None and 0 < self.mlp_k < self.w["down_t"].shape[0]
        if self.mode == "cats":
            return self.cats_t > 0
        return any(self.teal.get(p, 0.0) > 0 for p in ("gate", "up", "down"))

    def sparse_attn(self, num_heads: int) -> bool:
        if not self.enabled:
            return False
        if self.mode == "dejavu":
            return self.head_pred is not None and 0 < self.head_k < num_heads
        if self.mode == "teal":
            return any(self.teal.get(p, 0.0) > 0 for p in ("q", "k", "v", "o"))
        return False

    def gathered(self, x: torch.Tensor) -> bool | None:
        """True: gathered path; False: masked path; None: dense (prefill without ``prefill``)."""
        if x.shape[1] == 1 and not self.force_masked:
            return True
        return False if (self.prefill or self.force_masked) else None


# ---------------------------------------------------------------------------------------------
# helpers


def block_ms(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean square of each block of ``block`` consecutive channels of a (..., K) tensor:
    (..., ceil(K / block)); a short last block is averaged over its own length."""
    k = x.shape[-1]
    pad = -k % block
    sq = x.square()
    if pad:
        sq = F.pad(sq, (0, pad))
    ms = sq.view(*x.shape[:-1], -1, block).sum(-1) / block
    if pad:
        ms[..., -1] *= block / (block - pad)
    return ms


def block_keep(x: torch.Tensor, t: float, block: int) -> torch.Tensor:
    """TEAL on blocks: the blocks whose RMS is above ``t`` (bool, (..., ceil(K / block)))."""
    return block_ms(x, block) > t * t


def _gathered_in(x2: torch.Tensor, w_t: torch.Tensor, t: float, stats, block,
                 size: int = 1) -> torch.Tensor:  # fmt: skip
    """``x2`` thresholded at ``t`` times the transposed weight ``w_t``, reading kept rows only
    (``size`` > 1: kept blocks of that many rows, by block RMS). The fine-grained case is one
    ``threshold_cols`` call: on the CPU, selection and product in one C kernel (a small model's
    decode step is made of many small products, where separate selection operations cost more
    than the rows they skip); a dense fallback above the measured density is inside the op."""
    if size > 1:
        keep = block_keep(x2, t, size)  # (B, blocks)
        union = keep[0] if x2.shape[0] == 1 else keep.any(0)
        if x2.shape[0] > 1:  # each row keeps its own blocks only
            x2 = x2 * keep.repeat_interleave(size, 1)[:, : x2.shape[1]].to(x2.dtype)
        if stats is not None:
            read = int(union.sum()) * size - (-w_t.shape[0] % size if bool(union[-1]) else 0)
            stats.add(block, (w_t.shape[0] - read) * w_t.shape[1], w_t.numel())
        return gather_blocks(x2, w_t, union, size)
    out, kept = threshold_cols(x2, w_t, t)
    if stats is not None:
        stats.add(block, (w_t.shape[0] - int(kept)) * w_t.shape[1], w_t.numel())
    return out


def _mask_input(x: torch.Tensor, t: float, block: int = 1) -> torch.Tensor:
    if t <= 0:
        return x
    if block > 1:
        keep = block_keep(x, t, block).repeat_interleave(block, -1)[..., : x.shape[-1]]
        return x * keep
    return x * (x.abs() > t)


def _linear_in(x2: torch.Tensor, lin: nn.Linear, w_t: torch.Tensor | None, t: float, stats, block,
               size: int = 1):  # fmt: skip
    """A linear layer whose input is thresholded at ``t`` (TEAL), gathered over kept inputs."""
    if t <= 0 or w_t is None:
        return lin(x2)
    out = _gathered_in(x2, w_t, t, stats, block, size)
    return out if lin.bias is None else out + lin.bias


def _fused_in(x2: torch.Tensor, w_t: torch.Tensor, t: float, lins, stats, block, size: int = 1):
    """Projections sharing one input and threshold (TEAL's q/k/v, gate/up) as one gathered
    product over their concatenated transposed weights; split back, biases added."""
    out = _gathered_in(x2, w_t, t, stats, block, size)
    parts = out.split([lin.out_features for lin in lins], dim=1)
    return [p if lin.bias is None else p + lin.bias for p, lin in zip(parts, lins, strict=True)]


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    top = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)


def predictor_logits(pred: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Low-rank predictor logits from a residual-stream input (..., d): ``down`` is (r, d),
    ``up`` (n, r + 1) with the bias as its last column."""
    down, up = pred
    h = rms(z).to(down.dtype) @ down.t()
    return h @ up[:, :-1].t() + up[:, -1]


# ---------------------------------------------------------------------------------------------
# MLP


def mlp_forward(mlp: Any, state: LayerState, x: torch.Tensor) -> torch.Tensor:
    path = state.gathered(x) if state.sparse_mlp() else None
    if path is None:
        return type(mlp).forward(mlp, x)
    stats = state.stats if state.track else None
    if path:
        b = x.shape[0]
        out = _mlp_gathered(mlp, state, x.reshape(b, -1), stats)
        return out.reshape((*x.shape[:-1], out.shape[-1]))
    return _mlp_masked(mlp, state, x, stats)


def _mlp_scores_mask(mlp, state: LayerState, x: torch.Tensor) -> torch.Tensor:
    taps = state.taps.attn_in if state.lookahead else state.taps.mlp_in
    z = taps[state.layer_idx]
    assert state.mlp_pred is not None
    return _topk_mask(
        predictor_logits(state.mlp_pred, z.reshape((*x.shape[:-1], z.shape[-1]))), state.mlp_k
    )


def _mlp_masked(mlp, state: LayerState, x: torch.Tensor, stats) -> torch.Tensor:
    act = mlp.act_fn
    inter = mlp.gate_proj.out_features
    n_tok = x.shape[:-1].numel()
    per_neuron = mlp.gate_proj.in_features * 3
    if state.mode == "dejavu":
        h = act(mlp.gate_proj(x)) * mlp.up_proj(x)
        if state.oracle:
            keep = _topk_mask(h.abs() * mlp.down_proj.weight.norm(dim=0), state.mlp_k)
        else:
            keep = _mlp_scores_mask(mlp, state, x)
        h = h * keep
        if stats is not None:
            stats.add(
                "mlp", float(n_tok * inter - keep.sum()) * per_neuron, n_tok * inter * per_neuron
            )
        return mlp.down_proj(h)
    if state.mode == "cats":
        a = act(mlp.gate_proj(x))
        keep = a.abs() > state.cats_t
        if stats is not None:
            skipped = float(n_tok * inter - keep.sum()) * mlp.gate_proj.in_features * 2
            stats.add("mlp", skipped, n_tok * inter * per_neuron)
        return mlp.down_proj(a * mlp.up_proj(x) * keep)
    t, size = state.teal, state.block
    xg, xu = _mask_input(x, t.get("gate", 0.0), size), _mask_input(x, t.get("up", 0.0), size)
    h = act(mlp.gate_proj(xg)) * mlp.up_proj(xu)
    hd = _mask_input(h, t.get("down", 0.0), size)
    if stats is not None:
        d = mlp.gate_proj.in_features
        skipped = float((xg == 0).sum() + (xu == 0).sum()) * inter + float((hd == 0).sum()) * d
        stats.add("mlp", skipped, n_tok * inter * per_neuron)
    return mlp.down_proj(hd)


def _mlp_gathered(mlp, state: LayerState, x: torch.Tensor, stats) -> torch.Tensor:
    act = mlp.act_fn
    w = state.w
    inter, d = w["down_t"].shape
    if state.mode == "teal":
        t, size = state.teal, state.block
        if "gate_up_t" in w:
            g, u = _fused_in(x, w["gate_up_t"], t["gate"], (mlp.gate_proj, mlp.up_proj), stats,
                             "mlp", size)  # fmt: skip
        else:
            g = _linear_in(x, mlp.gate_proj, w.get("gate_t"), t.get("gate", 0.0), stats, "mlp",
                           size)  # fmt: skip
            u = _linear_in(x, mlp.up_proj, w.get("up_t"), t.get("up", 0.0), stats, "mlp", size)
        h = act(g) * u
        out = _linear_in(h, mlp.down_proj, w.get("down_t"), t.get("down", 0.0), stats, "mlp",
                         size)  # fmt: skip
        if stats is not None:  # dense projections count as read in full
            for p, numel in (("gate", inter * d), ("up", inter * d), ("down", inter * d)):
                if t.get(p, 0.0) <= 0:
                    stats.add("mlp", 0.0, numel)
        return out
    if state.mode == "dejavu":
        keep = _mlp_scores_mask(mlp, state, x)
        union = keep.any(0).nonzero().squeeze(1)
        pair = torch.stack((2 * union, 2 * union + 1), 1).reshape(-1)
        gu = gather_rows(x, w["gate_up"], pair).view(x.shape[0], -1, 2)
        g, u = gu[..., 0], gu[..., 1]
        if "gate_up_bias" in w:
            bias = w["gate_up_bias"].index_select(0, pair).view(-1, 2)
            g, u = g + bias[:, 0], u + bias[:, 1]
        h = act(g) * u
        if x.shape[0] > 1:
            h = h * keep.index_select(1, union)
        read = 3 * d * union.numel()
    else:  # cats
        a = act(mlp.gate_proj(x))
        keep = a.abs() > state.cats_t
        union = keep.any(0).nonzero().squeeze(1)
        u = gather_rows(x, mlp.up_proj.weight, union)
        if mlp.up_proj.bias is not None:
            u = u + mlp.up_proj.bias.index_select(0, union)
        h = a.index_select(1, union) * u * keep.index_select(1, union)
        read = d * inter + 2 * d * union.numel()
    if stats is not None:
        stats.add("mlp", 3 * d * inter - read, 3 * d * inter)
    out = gather_cols(h, w["down_t"], union)
    return out if mlp.down_proj.bias is None else out + mlp.down_proj.bias


# ---------------------------------------------------------------------------------------------
# attention


def _rotary(attn: Any):
    return sys.modules[type(attn).__module__].apply_rotary_pos_emb


def _interface(attn: Any):
    module = sys.modules[type(attn).__module__]
    eager = module.eager_attention_forward
    impl = attn.config._attn_implementation
    functions = module.ALL_ATTENTION_FUNCTIONS
    if hasattr(functions, "get_interface"):
        return functions.get_interface(impl, eager)
    return eager if impl in (None, "eager") else functions[impl]


def _cache_and_kwargs(kwargs: dict):
    cache = kwargs.pop("cache", None)
    if cache is None:
        cache = kwargs.pop("past_key_values", None)
    else:
        kwargs.pop("past_key_values", None)
    return cache, kwargs


def _update_cache(attn, cache, k, v, cos, sin, kwargs):
    if cache is None:
        return k, v
    cache_kwargs = {"sin": sin, "cos": cos, "cache_position": kwargs.get("cache_position")}
    return cache.update(k, v, attn.layer_idx, cache_kwargs)


def attention_forward(attn: Any, state: LayerState, hidden_states, *args, **kwargs):
    num_heads = attn.q_proj.out_features // attn.head_dim
    path = state.gathered(hidden_states) if state.sparse_attn(num_heads) else None
    if path is None:
        return type(attn).forward(attn, hidden_states, *args, **kwargs)
    if args:  # transformers passes everything after hidden_states by keyword
        names = ("position_embeddings", "attention_mask")
        kwargs.update(zip(names, args, strict=False))
    position_embeddings = kwargs.pop("position_embeddings")
    attention_mask = kwargs.pop("attention_mask", None)
    cache, kwargs = _cache_and_kwargs(kwargs)
    stats = state.stats if state.track else None
    if state.mode == "teal":
        return _attn_teal(attn, state, hidden_states, position_embeddings, attention_mask, cache,
                          kwargs, stats, path)  # fmt: skip
    if path:
        return _attn_heads_gathered(
            attn, state, hidden_states, position_embeddings, attention_mask, cache, kwargs, stats
        )
    return _attn_heads_masked(
        attn, state, hidden_states, position_embeddings, attention_mask, cache, kwargs, stats
    )


def _attend(attn, q, k, v, position_embeddings, attention_mask, cache, kwargs):
    """Rotary, cache update and the model's own attention function over all heads."""
    cos, sin = position_embeddings
    q, k = _rotary(attn)(q, k, cos, sin)
    k, v = _update_cache(attn, cache, k, v, cos, sin, kwargs)
    out, _ = _interface(attn)(
        attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling,
        **{n: kwargs[n] for n in ("sliding_window",) if n in kwargs},
    )  # fmt: skip
    return out  # (B, S, H, hd)


def _heads(x, attn):
    return x.view(*x.shape[:-1], -1, attn.head_dim).transpose(1, 2)


def _attn_teal(attn, state, hs, pos, mask, cache, kwargs, stats, gathered):
    t, w, size = state.teal, state.w, state.block
    bsz, seq, _ = hs.shape
    if gathered:
        x = hs.reshape(bsz, -1)
        if "qkv_t" in w:
            q, k, v = _fused_in(x, w["qkv_t"], t["q"], (attn.q_proj, attn.k_proj, attn.v_proj),
                                stats, "attn", size)  # fmt: skip
        else:
            q = _linear_in(x, attn.q_proj, w.get("q_t"), t.get("q", 0.0), stats, "attn", size)
            k = _linear_in(x, attn.k_proj, w.get("k_t"), t.get("k", 0.0), stats, "attn", size)
            v = _linear_in(x, attn.v_proj, w.get("v_t"), t.get("v", 0.0), stats, "attn", size)
        q, k, v = (y.view(bsz, 1, -1) for y in (q, k, v))
    else:
        q = attn.q_proj(_mask_input(hs, t.get("q", 0.0), size))
        k = attn.k_proj(_mask_input(hs, t.get("k", 0.0), size))
        v = attn.v_proj(_mask_input(hs, t.get("v", 0.0), size))
        if stats is not None:
            for p, lin in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj)):
                zeros = (
                    float((_mask_input(hs, t.get(p, 0.0), size) == 0).sum())
                    if t.get(p, 0) > 0
                    else 0.0
                )
                stats.add("attn", zeros * lin.out_features, bsz * seq * lin.weight.numel())
    out = _attend(attn, _heads(q, attn), _heads(k, attn), _heads(v, attn), pos, mask, cache, kwargs)
    out = out.reshape(bsz, seq, -1)
    if gathered:
        o = _linear_in(
            out.reshape(bsz, -1), attn.o_proj, w.get("o_t"), t.get("o", 0.0), stats, "attn", size
        )
        if stats is not None:
            for p, lin in (
                ("q", attn.q_proj),
                ("k", attn.k_proj),
                ("v", attn.v_proj),
                ("o", attn.o_proj),
            ):
                if t.get(p, 0.0) <= 0:
                    stats.add("attn", 0.0, lin.weight.numel())
        return o.view(bsz, 1, -1), None
    oin = _mask_input(out, t.get("o", 0.0), size)
    if stats is not None:
        zeros = float((oin == 0).sum()) if t.get("o", 0) > 0 else 0.0
        stats.add("attn", zeros * attn.o_proj.out_features, bsz * seq * attn.o_proj.weight.numel())
    return attn.o_proj(oin), None


def _head_keep(attn, state, shape) -> torch.Tensor:
    """(B, S, H) bool: the heads each token keeps (predicted one block ahead)."""
    li = state.layer_idx
    z = state.taps.mlp_in[li - 1] if li > 0 and state.lookahead else state.taps.attn_in[li]
    assert state.head_pred is not None
    return _topk_mask(
        predictor_logits(state.head_pred, z.reshape(*shape, z.shape[-1])), state.head_k
    )


def _attn_weights(attn) -> int:
    return sum(p.weight.numel() for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))


def _attn_heads_masked(attn, state, hs, pos, mask, cache, kwargs, stats):
    bsz, seq, _ = hs.shape
    q, k, v = (_heads(p(hs), attn) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = _attend(attn, q, k, v, pos, mask, cache, kwargs)  # (B, S, H, hd)
    if state.oracle:  # heads by the norm of their output through o_proj
        wo = attn.o_proj.weight.view(attn.o_proj.out_features, -1, attn.head_dim)
        norms = torch.einsum("bshk,dhk->bshd", out, wo).norm(dim=-1)
        keep = _topk_mask(norms, state.head_k)
    else:
        keep = _head_keep(attn, state, (bsz, seq))
    out = out * keep.unsqueeze(-1).to(out.dtype)
    if stats is not None:
        per_head = 2 * attn.q_proj.in_features * attn.head_dim
        stats.add("attn", float((~keep).sum()) * per_head, bsz * seq * _attn_weights(attn))
    return attn.o_proj(out.reshape(bsz, seq, -1)), None


def _attn_heads_gathered(attn, state, hs, pos, mask, cache, kwargs, stats):
    bsz = hs.shape[0]
    hd = attn.head_dim
    x = hs.reshape(bsz, -1)
    keep = _head_keep(attn, state, (bsz,))  # (B, H)
    heads = keep.any(0).nonzero().squeeze(1)
    rows = (heads[:, None] * hd + torch.arange(hd, device=heads.device)).reshape(-1)
    q = gather_rows(x, attn.q_proj.weight, rows)
    if attn.q_proj.bias is not None:
        q = q + attn.q_proj.bias.index_select(0, rows)
    q = q.view(bsz, -1, 1, hd)
    k, v = _heads(attn.k_proj(hs), attn), _heads(attn.v_proj(hs), attn)
    cos, sin = pos
    q, k = _rotary(attn)(q, k, cos, sin)
    k, v = _update_cache(attn, cache, k, v, cos, sin, kwargs)  # every head's K/V is cached
    groups = attn.q_proj.out_features // attn.k_proj.out_features
    kv = heads // groups
    ks, vs = k.index_select(1, kv), v.index_select(1, kv)
    if mask is not None:
        mask = mask[..., : ks.shape[-2]]
    out = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask, scale=attn.scaling)
    if bsz > 1:
        out = out * keep.index_select(1, heads)[:, :, None, None].to(out.dtype)
    out = out.transpose(1, 2).reshape(bsz, -1)
    o = gather_cols(out, state.w["o_t"], rows)
    if attn.o_proj.bias is not None:
        o = o + attn.o_proj.bias
    if stats is not None:
        skipped = (keep.shape[1] - heads.numel()) * 2 * attn.q_proj.in_features * hd
        stats.add("attn", skipped, _attn_weights(attn))
    return o.view(bsz, 1, -1), None
