"""Megalodon (arXiv 2404.08801) as a transformers model, following the reference code
(XuezheMax/megalodon) rather than the paper where they differ.

Module and parameter names inside a layer are the reference's, so its checkpoints load with only
the top-level renames of ``convert.py``::

    model.embed.weight                                    (reference: embed.weight)
    model.layers.{i}.mega.timenorm.{weight,bias}          TimestepNorm ("+1" scale), buffers
    model.layers.{i}.mega.timenorm.{prior_count,prior_mean,prior_logv}
    model.layers.{i}.mega.cema.{alpha,delta,theta,gamma,omega}      [D,N,1] [D,N,1] [D,1,1] [D,N,2] [D,1]
    model.layers.{i}.mega.rmsnorm.weight                  RMSNorm after CEMA ("+1")
    model.layers.{i}.mega.{wz,wv,wr,wh1}.{weight,bias}, mega.wh2.weight
    model.layers.{i}.mega.{gamma,beta}                    [2, z_dim] query/key scale and offset
    model.layers.{i}.nffn.norm.{weight,bias}              LayerNorm ("+1")
    model.layers.{i}.nffn.{fc1,fc2,fc3}.weight            fc3 only with swiglu; nffn.alpha with rescale_nffn
    model.final_norm.*                                    (reference: output.final_norm.*)
    lm_head.weight                                        (reference: output.output.weight)

One layer (``MegalodonBlock``), as coded in the reference:

    x_tn = TimestepNorm(x)                       causal cumulative group norm, streaming state
    mx   = RMSNorm(CEMA(x_tn) + omega * x_tn)    complex EMA, hidden state carried
    z    = znorm(W_z mx) per head (no affine);  q, k = z * (gamma + 1) / sqrt(d_z) + beta
    v    = SiLU(W_v x_tn);  r = SiLU(W_r mx)
    o    = softmax(q k^T) v within chunks of chunk_size (scale 1, RoPE by position in the chunk)
    y    = W_h1 mx + W_h2 (o * r) + x            no update gate, no output SiLU
    out  = fc2(SiLU(fc1 LN(y)) [* fc3 LN(y)]) * alpha + x     two-hop residual: back to x
    final: TimestepNorm, then lm_head

Deviations from the paper, all as the reference code has them: the CEMA input phase is folded into
eta (q = (1 - alpha delta) e^{i theta_k}, p = alpha real, no beta expansion); V comes from the
normalized input, not the CEMA output; the MEGA update gate and output SiLU are gone (the
two-hop residual replaces them); the reference's 7B preset uses chunk 2048 (paper 4096).
Deviations from the reference code: sequences that are not a multiple of ``chunk_size`` are
accepted (the last chunk is a short chunk: causal attention never looks past it, so zero
padding inside SDPA changes nothing; the reference refuses them); attention dropout is SDPA's
dropout on probabilities (the reference masks logits, DropKey); weight init uses
``initializer_range`` normals for the linear layers (the reference has per-layer init modes);
left padding is supported by masking padded keys and keeping padded tokens out of the
TimestepNorm statistics (padded tokens become zeros before CEMA), but chunk boundaries count
padded positions.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import logging
from transformers.utils.generic import ModelOutput

from .cache import MegalodonCache, MegalodonLayerCache, NormState
from .configuration import MegalodonConfig
from .ops.cema import cema
from .ops.cema_step import cema_step
from .ops.timestep_norm import timestep_norm

logger = logging.get_logger(__name__)

# transformers renamed the output field ``past_key_values`` -> ``cache`` during 5.x; older 5.x
# reads ``past_key_values``, so those versions get both fields.
_CACHE_RENAMED = isinstance(getattr(ModelOutput, "past_key_values", None), property)


# the model_kwargs key under which this transformers version's generate() carries the cache
_GENERATE_CACHE_KEY = (
    "cache"
    if "cache"
    in inspect.signature(GenerationMixin.__dict__["prepare_inputs_for_generation"]).parameters
    else "past_key_values"
)


def _backend(name: str) -> str | None:
    return None if name == "auto" else name


class MegalodonRMSNorm(nn.Module):
    """RMSNorm with the reference's "+1" scale (weight initialised to 0), or no affine."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            h = h * (self.weight.float() + 1.0)
        return h.to(x.dtype)


class MegalodonLayerNorm(nn.Module):
    """LayerNorm with the "+1" scale (the FFN's pre-norm)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight + 1.0
        return F.layer_norm(x, (x.shape[-1],), w, self.bias, self.eps)


class TimestepNorm(nn.Module):
    """Causal cumulative group norm (``ops.timestep_norm``) with the reference's optional prior:
    ``prior_count`` tokens of learnable mean ``prior_mean`` and variance ``exp(prior_logv)``."""

    prior_count: torch.Tensor  # buffer, int64 scalar
    prior_mean: torch.Tensor  # [G]: a parameter with a prior, else a zero buffer
    prior_logv: torch.Tensor

    def __init__(self, dim: int, groups: int, prior_count: int, eps: float, backend: str) -> None:
        super().__init__()
        self.num_groups, self.eps, self.backend = groups, eps, backend
        self.register_buffer("prior_count", torch.tensor(prior_count, dtype=torch.int64))
        if prior_count > 0:
            self.prior_mean = nn.Parameter(torch.zeros(groups))
            self.prior_logv = nn.Parameter(torch.zeros(groups))
        else:
            self.register_buffer("prior_mean", torch.zeros(groups))
            self.register_buffer("prior_logv", torch.zeros(groups))
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(
        self,
        x: torch.Tensor,
        state: NormState | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, NormState]:
        batch = x.shape[0]
        if state is None:
            state = NormState(
                self.prior_count.expand(batch).contiguous(),
                self.prior_mean.float().expand(batch, -1).contiguous(),
                self.prior_logv.float().exp().expand(batch, -1).contiguous(),
            )
        y, count, mean, var = timestep_norm(
            x,
            state.count,
            state.mean,
            state.var,
            (self.weight + 1.0).to(x.dtype),
            self.bias.to(x.dtype),
            padding_mask,
            self.eps,
            backend=_backend(self.backend),
        )
        return y, NormState(count, mean, var)


class MultiHeadComplexEMA(nn.Module):
    """CEMA with the reference's parameters; the recurrence runs in ``ops.cema``."""

    def __init__(self, dim: int, ndim: int, backend: str) -> None:
        super().__init__()
        self.dim, self.ndim, self.backend = dim, ndim, backend
        self.scale = math.sqrt(1.0 / ndim)
        self.alpha = nn.Parameter(torch.empty(dim, ndim, 1))
        self.delta = nn.Parameter(torch.empty(dim, ndim, 1))
        self.theta = nn.Parameter(torch.empty(dim, 1, 1))
        self.gamma = nn.Parameter(torch.empty(dim, ndim, 2))
        self.omega = nn.Parameter(torch.empty(dim, 1))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The reference initialisation (``_reset_parameters``)."""
        nn.init.normal_(self.alpha, 0.0, 0.2)
        nn.init.normal_(self.delta, 0.0, 0.2)
        idx = torch.randperm(self.dim)
        freqs = torch.exp(torch.arange(1, self.dim + 1) * -(math.log(self.dim) / self.dim))[idx]
        self.theta.copy_(torch.log(freqs / (1.0 - freqs)).view(self.dim, 1, 1))
        nn.init.normal_(self.gamma, 0.0, 1.0)
        self.gamma[:, :, 1] = 0.0
        nn.init.trunc_normal_(self.omega, 0.0, 0.25, -1.0, 1.0)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p [D, N], q [D, N, 2], eta [D, N, 2]) in float32: p = alpha,
        q = (1 - alpha delta) e^{i k theta_base}, eta = gamma / sqrt(N)."""
        theta = torch.sigmoid(self.theta.float()) * (2 * math.pi / self.ndim)
        k = torch.arange(1, self.ndim + 1, device=theta.device, dtype=theta.dtype)
        angle = k.view(1, -1) * theta.view(-1, 1)  # [D, N]
        alpha = torch.sigmoid(self.alpha.float()).squeeze(-1)
        delta = torch.sigmoid(self.delta.float()).squeeze(-1)
        mag = 1.0 - alpha * delta
        q = torch.stack([mag * torch.cos(angle), mag * torch.sin(angle)], -1)
        return alpha, q, self.gamma.float() * self.scale

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, L, D] -> (CEMA(x) + omega * x, last hidden state [B, D, N, 2])."""
        p, q, eta = self.coefficients()
        if x.shape[1] == 1 and state is not None:
            y, h = cema_step(x[:, 0], p, q, eta, state)
            y = y[:, None]
        else:
            y, h = cema(x, p, q, eta, state, backend=_backend(self.backend))
        return y + x * self.omega.squeeze(-1).to(x.dtype), h


def rope_tables(
    positions: torch.Tensor, dim: int, base: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [S, dim/2] of the reference's rotary embedding (adjacent pairs as complex)."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device).float() / dim))
    angle = positions.float()[:, None] * freqs
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x0, x1) of ``x`` [B, S, H, d] by the angles of their position."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None], sin[None, :, None]
    return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2).to(x.dtype)


def _sdpa(q, k, v, mask, dropout):
    """q/k/v as [B, S, H, d] -> [B, S, H, d_v]; ``mask``: True (causal) or a boolean mask."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if isinstance(mask, torch.Tensor):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=1.0)
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=1.0)
    return out.transpose(1, 2)


def _causal(q_len: int, k_len: int, offset: int, device) -> torch.Tensor:
    """[q, k] boolean: query i (at position offset + i) sees keys 0..offset + i."""
    qi = torch.arange(q_len, device=device)[:, None] + offset
    return torch.arange(k_len, device=device)[None, :] <= qi


def _with_keys(causal: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
    """Combine a [q, k] causal mask with per-row key validity [B', k] -> [B', 1, q, k]."""
    if key_valid is None:
        return causal
    mask = causal[None, None] & key_valid[:, None, None, :]
    return mask | ~mask.any(-1, keepdim=True)  # a query with no visible key: its output is unused


class ChunkedAttention(nn.Module):
    """Softmax attention inside chunks of ``chunk_size`` tokens through SDPA.

    A sequence that starts at a chunk boundary is cut into chunks folded into the batch (the last
    one short, zero-padded: causal attention never reads past a query, so the padding changes
    nothing); with a cache, the new tokens first complete the current chunk against its cached
    K/V. RoPE uses each token's position inside its chunk.
    """

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.chunk = config.chunk_size
        self.heads = config.num_attention_heads
        self.dropout = config.attention_dropout

    def forward(self, q, k, v, layer: MegalodonLayerCache | None, seen: int, key_valid):
        """q/k/v [B, S, H, d] (RoPE applied); ``key_valid`` [B, n_cached + S] bool or None."""
        batch, s = q.shape[:2]
        c = self.chunk
        dropout = self.dropout if self.training else 0.0
        cached_k = None if layer is None else layer.keys
        cached_v = None if layer is None else layer.values
        held = 0 if cached_k is None else cached_k.shape[1]
        outs = []
        first = min(s, c - held) if held else 0
        if first and cached_k is not None and cached_v is not None:  # complete the current chunk
            keys = torch.cat([cached_k, k[:, :first]], 1)
            vals = torch.cat([cached_v, v[:, :first]], 1)
            kv = None if key_valid is None else key_valid[:, : held + first]
            mask = _with_keys(_causal(first, held + first, held, q.device), kv)
            outs.append(_sdpa(q[:, :first], keys, vals, mask, dropout))
        rest = s - first
        if rest:  # whole chunks from a chunk boundary, the last one possibly short
            qa, ka, va = q[:, first:], k[:, first:], v[:, first:]
            kv = None if key_valid is None else key_valid[:, held + first :]
            n_chunks = -(-rest // c)
            size = min(c, rest)
            pad = n_chunks * size - rest
            if pad:
                qa, ka, va = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (qa, ka, va))
                if kv is not None:
                    kv = F.pad(kv, (0, pad), value=False)

            def fold(t):
                return t.reshape(batch * n_chunks, size, *t.shape[2:])

            kvf = None if kv is None else kv.reshape(batch * n_chunks, size)
            mask = True if kvf is None else _with_keys(_causal(size, size, 0, q.device), kvf)
            out = _sdpa(fold(qa), fold(ka), fold(va), mask, dropout)
            outs.append(out.reshape(batch, n_chunks * size, *out.shape[2:])[:, :rest])
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        if layer is not None:  # keep only the current (incomplete) chunk's K/V
            total = seen + s
            m = total % c
            if m == 0:
                layer.keys = layer.values = None
            elif rest:
                layer.keys, layer.values = k[:, -m:].detach(), v[:, -m:].detach()
            elif cached_k is not None and cached_v is not None:
                layer.keys = torch.cat([cached_k, k], 1)[:, -m:].detach()
                layer.values = torch.cat([cached_v, v], 1)[:, -m:].detach()
        return out


class MovingAverageGatedAttention(nn.Module):
    """The reference's ``MovingAverageGatedAttention`` (one layer's token mixing)."""

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        d, z, h = config.hidden_size, config.z_dim, config.value_dim
        eps = config.norm_eps
        self.heads, self.z_head, self.v_head = (
            config.num_attention_heads, config.z_head_dim, config.v_head_dim,
        )  # fmt: skip
        self.rope_theta = config.rope_theta
        self.chunk = config.chunk_size
        self.hidden_dropout, self.dropout = config.hidden_dropout, config.dropout
        self.timenorm = TimestepNorm(
            d, config.norm_num_groups, config.prior_count, eps, config.norm_backend
        )
        self.cema = MultiHeadComplexEMA(d, config.cema_ndim, config.cema_backend)
        self.rmsnorm = MegalodonRMSNorm(d, eps, config.norm_affine)
        self.znorm = MegalodonRMSNorm(self.z_head, eps, affine=False)
        self.wv = nn.Linear(d, h)
        self.wz = nn.Linear(d, z)
        self.wr = nn.Linear(d, h)
        self.wh1 = nn.Linear(d, d)
        self.wh2 = nn.Linear(h, d, bias=False)
        self.gamma = nn.Parameter(torch.zeros(2, z))
        self.beta = nn.Parameter(torch.zeros(2, z))
        self.inner_attention = ChunkedAttention(config)

    def forward(self, x, layer: MegalodonLayerCache | None, seen: int, padding_mask, key_valid):
        batch, s, _ = x.shape
        drop = self.training
        x_tn, norm_state = self.timenorm(x, layer.norm if layer else None, padding_mask)
        mx, ema = self.cema(x_tn, layer.ema if layer else None)
        mx = F.dropout(self.rmsnorm(mx), self.hidden_dropout, drop)
        z = self.znorm(self.wz(mx).view(batch, s, self.heads, self.z_head)).view(batch, s, -1)
        qk = z.unsqueeze(2) * ((self.gamma + 1.0) / math.sqrt(self.z_head)) + self.beta
        q, k = qk.unbind(2)
        v = F.silu(self.wv(x_tn))
        r = F.silu(self.wr(mx))
        pos = torch.arange(seen, seen + s, device=x.device) % self.chunk
        cos, sin = rope_tables(pos, self.z_head, self.rope_theta)
        q = apply_rope(q.view(batch, s, self.heads, self.z_head), cos, sin)
        k = apply_rope(k.view(batch, s, self.heads, self.z_head), cos, sin)
        v = v.view(batch, s, self.heads, self.v_head)
        attn = self.inner_attention(q, k, v, layer, seen, key_valid).reshape(batch, s, -1)
        attn = F.dropout(attn * r, self.hidden_dropout, drop)
        h = F.dropout(self.wh1(mx) + self.wh2(attn), self.dropout, drop)
        if layer is not None:
            layer.norm = NormState(*(t.detach() for t in norm_state.tensors()))
            layer.ema = ema.detach()
        return h + x


class NormalizedFeedForwardNetwork(nn.Module):
    """LayerNorm -> SiLU MLP (SwiGLU with ``swiglu``) -> optional layer scale -> + residual."""

    def __init__(self, config: MegalodonConfig, layer_idx: int) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.hidden_dropout, self.dropout = config.hidden_dropout, config.dropout
        self.norm = MegalodonLayerNorm(d, config.norm_eps, config.norm_affine)
        self.fc1 = nn.Linear(d, f, bias=False)
        self.fc2 = nn.Linear(f, d, bias=False)
        self.fc3 = nn.Linear(d, f, bias=False) if config.swiglu else None
        self.rescale_init = 0.1 * (0.5**layer_idx) if config.rescale_nffn else None
        self.alpha = (
            nn.Parameter(torch.full((d,), self.rescale_init))
            if self.rescale_init is not None
            else None
        )

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.norm(y)
        hidden = F.silu(self.fc1(x))
        if self.fc3 is not None:
            hidden = hidden * self.fc3(x)
        hidden = F.dropout(hidden, self.hidden_dropout, self.training)
        out = F.dropout(self.fc2(hidden), self.dropout, self.training)
        if self.alpha is not None:
            out = out * self.alpha
        return out + residual


class MegalodonBlock(GradientCheckpointingLayer):
    def __init__(self, config: MegalodonConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mega = MovingAverageGatedAttention(config)
        self.nffn = NormalizedFeedForwardNetwork(config, layer_idx)

    def forward(self, x, layer=None, seen=0, padding_mask=None, key_valid=None):
        y = self.mega(x, layer, seen, padding_mask, key_valid)
        return self.nffn(y, x)  # two-hop residual: the FFN adds back the block input


@dataclass
class MegalodonModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    if not _CACHE_RENAMED:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MegalodonCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    if not _CACHE_RENAMED:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _with_cache(output_cls, cache, **fields):
    out = output_cls(cache=cache, **fields)
    if cache is not None and not _CACHE_RENAMED:
        out.past_key_values = cache
    return out


def _refuse_unsupported(kwargs: dict[str, Any], output_attentions: bool | None) -> None:
    if output_attentions:
        raise ValueError(
            "Megalodon: output_attentions is not supported (chunked attention runs through SDPA, "
            "which returns no attention weights)"
        )


class MegalodonPreTrainedModel(PreTrainedModel):
    config_class = MegalodonConfig
    config: MegalodonConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["MegalodonBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False
    _is_stateful = True  # CEMA/TimestepNorm states: no assisted decoding / cache cropping

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own MegalodonCache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            module.weight.normal_(0.0, std)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
        elif isinstance(module, MegalodonRMSNorm | MegalodonLayerNorm):
            for p in (module.weight, getattr(module, "bias", None)):
                if p is not None:
                    p.zero_()
        elif isinstance(module, TimestepNorm):
            module.weight.zero_()
            module.bias.zero_()
            module.prior_mean.zero_()
            module.prior_logv.zero_()
            module.prior_count.fill_(self.config.prior_count)
        elif isinstance(module, MultiHeadComplexEMA):
            module.reset_parameters()
        elif isinstance(module, MovingAverageGatedAttention):
            module.gamma.zero_()
            module.beta.zero_()
        elif (
            isinstance(module, NormalizedFeedForwardNetwork)
            and module.alpha is not None
            and module.rescale_init is not None
        ):
            module.alpha.fill_(module.rescale_init)


class MegalodonModel(MegalodonPreTrainedModel):
    """Embedding, the Megalodon blocks and the final TimestepNorm (``last_hidden_state`` is
    normalized). Positions come from the cache's token count; ``position_ids`` is ignored."""

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.emb_scale = math.sqrt(config.hidden_size) if config.scale_emb else None
        self.layers = nn.ModuleList(
            MegalodonBlock(config, i) for i in range(config.num_hidden_layers)
        )
        self.final_norm = TimestepNorm(
            config.hidden_size,
            config.norm_num_groups,
            config.prior_count,
            config.norm_eps,
            config.norm_backend,
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ):
        _refuse_unsupported(kwargs, output_attentions)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Megalodon: pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        use_cache = self.config.use_cache if use_cache is None else use_cache
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:
            use_cache = False
        if inputs_embeds is None:
            if input_ids is None:  # excluded above; narrows the type
                raise ValueError("Megalodon: pass exactly one of input_ids or inputs_embeds")
            if input_ids.dim() != 2:
                raise ValueError(
                    f"Megalodon: input_ids must be [batch, tokens], got {tuple(input_ids.shape)}"
                )
            embeds: torch.Tensor = self.embed(input_ids)
        else:
            embeds = inputs_embeds
        x = embeds if self.emb_scale is None else embeds * self.emb_scale
        x = F.dropout(x, self.config.dropout, self.training)
        batch, s = x.shape[:2]
        if cache is not None and not isinstance(cache, MegalodonCache):
            if not isinstance(cache, Cache):
                raise TypeError(
                    f"Megalodon: cache must be a MegalodonCache, got {type(cache).__name__}"
                )
            if cache.get_seq_length() > 0:
                raise TypeError(
                    f"Megalodon: cache must be a MegalodonCache, got a filled {type(cache).__name__}"
                )
            cache = None  # an empty generic cache (e.g. made by generate): replace it
        if use_cache and cache is None:
            cache = MegalodonCache(self.config)
        if not use_cache:
            cache = None
        seen = cache.seen_tokens if cache is not None else 0
        padding_mask, key_valid = self._masks(attention_mask, batch, s, seen)

        hidden = x
        all_hidden: list[torch.Tensor] | None = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden)
            layer_cache = cache.layer(i) if cache is not None else None
            # with gradient checkpointing on, the block (a GradientCheckpointingLayer) recomputes
            # itself in the backward; the cache is off then
            hidden = layer(hidden, layer_cache, seen, padding_mask, key_valid)
        hidden, final_state = self.final_norm(
            hidden, cache.final_norm if cache is not None else None, padding_mask
        )
        if cache is not None:
            cache.final_norm = NormState(*(t.detach() for t in final_state.tensors()))
            cache.advance(s)
        if all_hidden is not None:
            all_hidden.append(hidden)
        out = _with_cache(
            MegalodonModelOutput,
            cache,
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return out if return_dict else out.to_tuple()

    def _masks(self, attention_mask, batch: int, s: int, seen: int):
        """(padding mask of the new tokens [B, s] True = pad, key validity [B, held + s]) or
        (None, None) when nothing is padded."""
        if attention_mask is None:
            return None, None
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch:
            raise ValueError(
                f"Megalodon: attention_mask must be [batch, tokens], got {tuple(attention_mask.shape)}"
            )
        width = attention_mask.shape[1]
        if width not in (s, seen + s):
            raise ValueError(
                f"Megalodon: attention_mask has {width} columns; expected the new tokens ({s}) "
                f"or all tokens ({seen + s})"
            )
        valid = attention_mask.to(torch.bool)
        if bool(valid.all()):
            return None, None
        c = self.config.chunk_size
        if seen == 0 and not bool(valid[:, 0].all()):
            lead = (valid.cumsum(1) == 0).sum(1)  # left padding per row
            if bool((lead % c != 0).any()):
                logger.warning_once(
                    f"Megalodon: left padding that is not a multiple of chunk_size={c} shifts the "
                    "attention chunks of the padded rows (chunk boundaries count padded "
                    "positions), so those rows differ from their unpadded runs; rows padded by a "
                    "multiple of chunk_size, or run alone, are exact"
                )
        held = seen % c
        if width == s:
            valid = torch.cat([valid.new_ones(batch, seen), valid], 1)
        return ~valid[:, -s:], valid[:, seen - held :]


class MegalodonForCausalLM(MegalodonPreTrainedModel, GenerationMixin):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed.weight"}

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__(config)
        self.model = MegalodonModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value):
        self.model.embed = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
        result = _with_cache(
            MegalodonCausalLMOutput,
            out.cache,
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states,
        )
        return result if return_dict else result.to_tuple()

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """``generate`` starts every call that uses a cache with a ``MegalodonCache`` (so that
        chunked prefill, ``prefill_chunk_size``, has one to fill); a cache passed in is kept."""
        if any(model_kwargs.get(k) is not None for k in ("cache", "past_key_values")):
            return super()._prepare_cache_for_generation(  # pyright: ignore[reportAttributeAccessIssue]  (transformers types self as its Protocol)
                generation_config, model_kwargs, *args, **kwargs
            )
        if generation_config.use_cache is False:
            return None
        if generation_config.cache_implementation is not None:
            logger.warning_once(
                f"Megalodon: cache_implementation={generation_config.cache_implementation!r} is "
                "ignored; the model decodes with its own constant-size MegalodonCache"
            )
        model_kwargs[_GENERATE_CACHE_KEY] = MegalodonCache(self.config)
        return None

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        next_sequence_length: int | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict[str, Any]:
        """Feed only the tokens the cache has not seen; the cache is a ``MegalodonCache``.

        How many are new: ``next_sequence_length`` when ``generate`` says so; else all of
        ``input_ids`` when the attention mask is wider than them or they are no longer than what
        the cache has seen (a prefill chunk), else the tokens past the cache's count. A prompt
        given as ``inputs_embeds`` is used on the first step (``input_ids`` then holds only
        generated tokens). Positions come from the cache, so ``position_ids`` is not forwarded."""
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_values", None)
        for key in ("position_ids", "cache_position"):
            kwargs.pop(key, None)
        seen = cache.get_seq_length() if isinstance(cache, MegalodonCache) else 0
        inputs: dict[str, Any] = {}
        if inputs_embeds is not None and (is_first_iteration or seen == 0):
            new = (
                inputs_embeds.shape[1] - seen
                if next_sequence_length is None
                else next_sequence_length
            )
            source, key = inputs_embeds, "inputs_embeds"
        else:
            if next_sequence_length is not None:
                new = next_sequence_length
            elif attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
                new = input_ids.shape[1]  # the mask spans the context: input_ids are the new tokens
            elif input_ids.shape[1] > seen:
                new = input_ids.shape[1] - seen  # the whole sequence so far
            else:
                new = input_ids.shape[1]  # a chunk of new tokens (prefill_chunk_size)
            source, key = input_ids, "input_ids"
        if not 0 < new <= source.shape[1]:
            raise ValueError(
                f"Megalodon: the cache has seen {seen} tokens; the inputs hold {source.shape[1]}, "
                "so there is no new token to feed (continue with the full sequence or new tokens)"
            )
        inputs[key] = source[:, -new:]
        if isinstance(cache, MegalodonCache):
            inputs["cache"] = cache
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        for name, value in kwargs.items():
            if name not in inputs and name != "labels":
                inputs[name] = value
        return inputs


__all__ = [
    "MegalodonBlock",
    "MegalodonCausalLMOutput",
    "MegalodonForCausalLM",
    "MegalodonModel",
    "MegalodonPreTrainedModel",
]
