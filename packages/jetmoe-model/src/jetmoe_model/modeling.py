"""JetMoE: a decoder whose attention (MoA) and MLP (MoE) are both sparse, top-k of E experts.

Module and parameter names follow the released checkpoints (``jetmoe/jetmoe-8b``) and
transformers' ``JetMoe*`` port exactly, so their state dicts load unchanged::

    model.embed_tokens.weight
    model.layers.{i}.input_layernorm.weight                     (eps 1e-6, as released)
    model.layers.{i}.self_attention.experts.input_linear.weight  [E, H_kv*d_head, D]  W_q per expert
    model.layers.{i}.self_attention.experts.output_linear.weight [E, D, H_kv*d_head]  W_o per expert
    model.layers.{i}.self_attention.experts.bias                 [D]
    model.layers.{i}.self_attention.experts.router.layer.weight  [E, D]
    model.layers.{i}.self_attention.kv_proj.weight               [2*H_kv*d_head, D]   shared K/V
    model.layers.{i}.post_attention_layernorm.weight            (eps 1e-6)
    model.layers.{i}.mlp.input_linear.weight                     [E, 2*D_ffn, D]      SwiGLU in
    model.layers.{i}.mlp.output_linear.weight                    [E, D, D_ffn]
    model.layers.{i}.mlp.bias                                    [D]
    model.layers.{i}.mlp.router.layer.weight                     [E, D]
    model.norm.weight                                           (eps = config.rms_norm_eps)
    lm_head.weight                                              (tied to embed_tokens)

Both expert layers run the one expert operator (``jetmoe_model.ops.experts.expert_linear``) with
the backend from ``config.expert_backend``; a SwiGLU MoE MLP runs as one op after the router
matmul (``jetmoe_model.ops.expert_mlp.moe_layer``: routing, experts, combine, bias). The KV
cache holds the shared K/V once per layer
(``num_key_value_heads`` heads); each of the top-k attention experts reuses them ("tiled": query
head ``j * H_kv + h`` of expert slot ``j`` attends with KV head ``h``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import (
    GenericForSequenceClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.utils.generic import ModelOutput

from tensor_utils.checkpoint import CheckpointNotFoundError

from .checkpoint import check_checkpoint
from .configuration import JetMoEConfig
from .ops.expert_mlp import moe_layer
from .ops.expert_mlp.naive import combine
from .ops.experts import expert_linear
from .ops.routing import top_k_route
from .routing import (
    TopKRouting,
    all_reduce_statistics,
    balance_from_statistics,
    router_statistics,
    z_loss_from_statistics,
)


class JetMoERMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        h = hidden_states.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.variance_epsilon}"


class JetMoERotaryEmbedding(nn.Module):
    """RoPE over ``kv_channels``, as transformers' rotary embeddings: ``config.rope_parameters``
    picks the frequencies (``rope_type`` "default" or one of transformers' ``ROPE_INIT_FUNCTIONS``:
    linear, dynamic NTK, YaRN, LongRoPE, Llama 3), ``dynamic_rope_update`` re-derives them for
    dynamic / LongRoPE past the trained length, and ``attention_scaling`` (YaRN, LongRoPE) scales
    cos and sin. ``inv_freq`` is a non-persistent buffer that ``_init_weights`` fills in (also
    after meta-device loading)."""

    inv_freq: torch.Tensor
    original_inv_freq: torch.Tensor

    def __init__(self, config: JetMoEConfig, device=None) -> None:
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        params = config.rope_parameters or {}
        self.rope_type = params.get("rope_type", params.get("type", "default"))
        inv_freq, self.attention_scaling = self.rope_init_fn(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @torch.no_grad()
    def reset_frequencies(self) -> None:
        """Fill the frequency buffers from the config (after ``to_empty`` or meta loading)."""
        inv_freq, self.attention_scaling = self.rope_init_fn(self.config, self.inv_freq.device)
        self.inv_freq = inv_freq.float()  # float32, whatever dtype the module was cast to
        self.original_inv_freq = inv_freq.float().clone()
        self.max_seq_len_cached = self.original_max_seq_len

    @property
    def rope_init_fn(self):
        if self.rope_type == "default":
            return self.compute_default_rope_parameters
        return ROPE_INIT_FUNCTIONS[self.rope_type]

    @staticmethod
    def compute_default_rope_parameters(
        config: JetMoEConfig, device=None, seq_len: int | None = None, **kwargs
    ) -> tuple[torch.Tensor, float]:
        """Plain RoPE (the released model): ``theta ** (-2i / d)``, no output scaling."""
        base = (config.rope_parameters or {}).get("rope_theta", config.rope_theta)
        dim = config.kv_channels
        exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        return 1.0 / (base ** (exponent / dim)), 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        """``(cos, sin)`` of shape ``[batch, seq, kv_channels]`` in ``x``'s dtype."""
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class ParallelExperts(nn.Module):
    """``E`` linear maps stored as one ``[E, out, in]`` parameter (the released layout)."""

    def __init__(self, num_experts: int, input_size: int, output_size: int, config) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, output_size, input_size))
        self.num_experts = num_experts
        self.input_size = input_size
        self.output_size = output_size
        self.config = config

    def forward(self, x, routing, input_order: str, output_order: str) -> torch.Tensor:
        return expert_linear(
            x,
            self.weight,
            routing.sorted_pair,
            routing.expert_offsets,
            input_order=input_order,
            output_order=output_order,
            backend=self.config.expert_backend,
        )

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, in={self.input_size}, out={self.output_size}"


class JetMoETopKGating(nn.Module):
    def __init__(self, input_size: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.layer = nn.Linear(input_size, num_experts, bias=False)

    def forward(self, x: torch.Tensor, backend: str | None = None) -> TopKRouting:
        # the Triton backend routes in 1-2 kernels (ops/routing), the others in PyTorch
        return top_k_route(self.layer(x).float(), self.top_k, x.dtype, backend=backend)


class JetMoEMoE(nn.Module):
    """MoE MLP: top-k of E SwiGLU experts, plus one output bias per layer."""

    def __init__(self, config: JetMoEConfig) -> None:
        super().__init__()
        d, f, e = config.hidden_size, config.intermediate_size, config.num_local_experts
        self.input_size, self.hidden_size = d, f
        self.activation = ACT2FN[config.activation_function]
        # SiLU gates run through the MoE-layer op (routing + fused SwiGLU experts + combine as
        # one autograd node on the Triton backend)
        self.swiglu = config.activation_function == "silu"
        self.bias = nn.Parameter(torch.empty(d))
        self.input_linear = ParallelExperts(e, d, 2 * f, config)
        self.output_linear = ParallelExperts(e, f, d, config)
        self.router = JetMoETopKGating(d, e, config.num_experts_per_tok)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, TopKRouting]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        backend = self.input_linear.config.expert_backend
        if self.swiglu:
            # Triton: routing + experts + combine as one node, 4-5 launches forward after the
            # router matmul, the routing's backward folded into the combine's backward kernel;
            # route.logits keeps the router's dtype there (the auxiliary losses upcast)
            out, route = moe_layer(
                flat,
                self.router.layer(flat),
                self.input_linear.weight,
                self.output_linear.weight,
                self.bias,
                self.router.top_k,
                backend=backend,
            )
            return out.view(shape), route
        route = self.router(flat, backend)
        routing = route.routing
        h = self.input_linear(flat, routing, "token", "sorted")
        gate, up = h.chunk(2, dim=-1)
        y = self.output_linear(self.activation(gate) * up, routing, "sorted", "pair")
        if expert_linear.select(flat.device.type, flat.dtype, backend) == "triton":
            from .ops.expert_mlp.triton import combine as fused_combine

            # one pass (and one backward pass) for multiply, sum, bias
            out = fused_combine(y, route.gates, self.bias)
        else:
            out = combine(y, route.gates) + self.bias
        return out.view(shape), route


class JetMoEMoA(nn.Module):
    """Mixture of attention heads: each expert owns a query and an output projection."""

    def __init__(self, config: JetMoEConfig) -> None:
        super().__init__()
        d, e = config.hidden_size, config.num_local_experts
        self.input_size = d
        self.hidden_size = config.attention_size
        self.top_k = config.num_experts_per_tok
        self.bias = nn.Parameter(torch.empty(d))
        self.input_linear = ParallelExperts(e, d, self.hidden_size, config)
        self.output_linear = ParallelExperts(e, self.hidden_size, d, config)
        self.router = JetMoETopKGating(d, e, self.top_k)

    def map(self, x: torch.Tensor) -> tuple[torch.Tensor, TopKRouting]:
        """``[B, S, D]`` -> queries ``[B * S * k, H_kv * d_head]`` in pair order."""
        flat = x.reshape(-1, x.shape[-1])
        route = self.router(flat, self.input_linear.config.expert_backend)
        return self.input_linear(flat, route.routing, "token", "pair"), route

    def reduce(self, attn: torch.Tensor, route: TopKRouting) -> torch.Tensor:
        """Per-pair attention outputs ``[B * S * k, H_kv * d_head]`` -> ``[B * S, D]``."""
        y = self.output_linear(attn, route.routing, "pair", "pair")
        return combine(y, route.gates) + self.bias


class JetMoEAttention(nn.Module):
    def __init__(self, config: JetMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.top_k = config.num_experts_per_tok
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.kv_channels
        self.attention_dropout = config.attention_dropout
        self.config = config
        self.experts = JetMoEMoA(config)
        self.kv_proj = nn.Linear(config.hidden_size, 2 * config.attention_size, bias=False)

    def forward(self, x, cos, sin, attn_mask, cache, output_attentions: bool = False):
        """Returns (output, routing, attention weights ``[B, heads, q, kv]`` or None). The
        weights are computed (eager attention) when asked for or when
        ``config._attn_implementation == "eager"``; SDPA runs otherwise."""
        b, s, _ = x.shape
        hkv, dh, k = self.num_kv_heads, self.head_dim, self.top_k
        q, route = self.experts.map(x)
        key, value = self.kv_proj(x).chunk(2, dim=-1)
        # queries as [B, H_kv, k, S, d]: head h of every expert slot next to KV head h (GQA groups)
        q = q.view(b, s, k, hkv, dh).permute(0, 3, 2, 1, 4)
        key = key.view(b, s, hkv, dh).transpose(1, 2)
        value = value.view(b, s, hkv, dh).transpose(1, 2)
        q = apply_rotary(q, cos[:, None, None], sin[:, None, None])
        key = apply_rotary(key, cos[:, None], sin[:, None])
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        q = q.reshape(b, hkv * k, s, dh)
        dropout = self.attention_dropout if self.training else 0.0
        length = key.shape[2]
        if isinstance(attn_mask, torch.Tensor) and attn_mask.shape[-1] != length:
            # a static cache returns all its slots: the ones past the mask are empty
            attn_mask = F.pad(attn_mask, (0, length - attn_mask.shape[-1]), value=False)
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            # transformers' head order (expert slot j's head h is head j * H_kv + h), so that
            # the returned weights are the ones the output was computed from (retain_grad)
            q_t = q.view(b, hkv, k, s, dh).transpose(1, 2).reshape(b, k * hkv, s, dh)
            out, weights = self._eager(q_t, key, value, attn_mask, dropout)
            out = out.view(b, k, hkv, s, dh).transpose(1, 2).reshape(b, hkv * k, s, dh)
            if not output_attentions:
                weights = None
        elif isinstance(attn_mask, torch.Tensor):
            length = key.shape[2]
            key = key[:, :, None].expand(b, hkv, k, length, dh).reshape(b, hkv * k, length, dh)
            value = value[:, :, None].expand(b, hkv, k, length, dh).reshape(b, hkv * k, length, dh)
            out = F.scaled_dot_product_attention(
                q, key, value, attn_mask=attn_mask, dropout_p=dropout
            )
        else:
            out = F.scaled_dot_product_attention(
                q,
                key,
                value,
                is_causal=bool(attn_mask),
                dropout_p=dropout,
                enable_gqa=True,
            )
        out = out.view(b, hkv, k, s, dh).permute(0, 3, 2, 1, 4).reshape(b * s * k, hkv * dh)
        return self.experts.reduce(out, route).view(b, s, -1), route, weights

    def _eager(self, q, key, value, attn_mask, dropout: float):
        """Attention as explicit matmuls and softmax (float32 softmax, like transformers'); query
        head ``j * H_kv + h`` attends with KV head ``h`` (K/V tiled)."""
        _, heads, s, dh = q.shape
        hkv = key.shape[1]
        key = key.repeat(1, heads // hkv, 1, 1)
        value = value.repeat(1, heads // hkv, 1, 1)
        scores = torch.matmul(q, key.transpose(-1, -2)) * dh**-0.5
        if isinstance(attn_mask, torch.Tensor):
            allowed = attn_mask
        elif attn_mask:  # plain causal, aligned to the top-left as SDPA's is_causal
            allowed = torch.ones(s, key.shape[2], dtype=torch.bool, device=q.device).tril()
        else:
            allowed = None
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        weights = F.dropout(weights, p=dropout, training=self.training)
        return torch.matmul(weights, value), weights


class JetMoEBlock(GradientCheckpointingLayer):
    """One decoder layer; transformers' ``GradientCheckpointingLayer`` checkpoints it when
    ``gradient_checkpointing_enable()`` was called (the cache is dropped there, as in
    transformers' layers)."""

    def __init__(self, config: JetMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = JetMoERMSNorm(config.hidden_size, config.block_norm_eps)
        self.self_attention = JetMoEAttention(config, layer_idx)
        self.post_attention_layernorm = JetMoERMSNorm(config.hidden_size, config.block_norm_eps)
        self.mlp = JetMoEMoE(config)

    def forward(self, hidden, cos, sin, attn_mask, cache=None, output_attentions: bool = False):
        attn, attn_route, weights = self.self_attention(
            self.input_layernorm(hidden), cos, sin, attn_mask, cache, output_attentions
        )
        hidden = hidden + attn
        mlp, mlp_route = self.mlp(self.post_attention_layernorm(hidden))
        hidden = hidden + mlp
        return (
            hidden,
            attn_route.logits,
            attn_route.expert_index,
            mlp_route.logits,
            mlp_route.expert_index,
            weights,
        )


# transformers renamed the cache field ``past_key_values`` -> ``cache`` during 5.x (newer
# ModelOutput keeps ``past_key_values`` as a read-only alias); older 5.x generate reads
# ``past_key_values``, so those versions get both fields.
_CACHE_RENAMED = isinstance(getattr(ModelOutput, "past_key_values", None), property)


def _renamed_cache_kwarg(forward):
    """Where transformers renamed ``past_key_values`` to ``cache``, the old name still works
    with transformers' deprecation warning, as in its own models."""
    if not _CACHE_RENAMED:
        return forward
    from transformers.utils.deprecation import deprecate_kwarg

    return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)


@dataclass
class JetMoEModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    if not _CACHE_RENAMED:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    router_expert_index: tuple[torch.Tensor, ...] | None = None


@dataclass
class JetMoECausalLMOutput(ModelOutput):
    """``loss = lm_loss`` (transformers' causal-LM loss), plus
    ``aux_loss_coef * aux_loss + router_z_loss_coef * z_loss`` with ``output_router_logits``.

    ``aux_loss`` / ``z_loss``: load-balancing and z-loss summed over all MoA and MoE routers
    (2 per layer). ``router_logits`` / ``router_expert_index``: per router, in layer order
    (attention router, then MLP router, for each layer). ``cache`` is the KV cache (also readable
    as ``past_key_values``).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    if not _CACHE_RENAMED:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    lm_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    router_expert_index: tuple[torch.Tensor, ...] | None = None


class JetMoEPreTrainedModel(PreTrainedModel):
    config_class = JetMoEConfig
    config: JetMoEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["JetMoEBlock"]
    _supports_sdpa = True
    # from_pretrained checks a local checkpoint against the causal-LM / base-model layout
    _check_released_layout = True
    _can_compile_fullgraph = False  # the reference loop reads offsets on the host
    main_input_name = "input_ids"

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """The attention reads ``config._attn_implementation`` per call ("eager" or SDPA), so
        ``set_attn_implementation()`` may switch it. transformers decides this from the module
        source (``ALL_ATTENTION_FUNCTIONS``; 5.2x caches the answer), which cannot tell here."""
        return True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, after checking a local checkpoint's tensor shapes against the
        config: a tensor of the wrong shape is refused with one line naming it and the config
        key behind it (``CheckpointMismatchError``, a ``RuntimeError`` as transformers raises).
        Missing and extra tensors load as in transformers: the missing ones are initialised,
        both are listed in transformers' load report (a warning) and in
        ``output_loading_info=True``'s dict. ``load_checkpoint`` is the strict loader."""
        path = Path(str(pretrained_model_name_or_path))
        if (
            cls._check_released_layout
            and path.is_dir()
            and not kwargs.get("ignore_mismatched_sizes")
        ):
            config = kwargs.get("config")
            if not isinstance(config, JetMoEConfig):
                config = JetMoEConfig.from_pretrained(path)
            with contextlib.suppress(CheckpointNotFoundError):  # no weights: transformers reports
                check_checkpoint(config, path, complete=False)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding | ParallelExperts):
            module.weight.normal_(mean=0.0, std=std)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, JetMoEMoE | JetMoEMoA):
            module.bias.zero_()
        elif isinstance(module, JetMoERMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, JetMoERotaryEmbedding):
            module.reset_frequencies()


def _with_cache(output_cls, cache, **fields):
    """Build an output holding ``cache`` under both names: transformers >= 5.2x reads ``cache``
    and refuses both as constructor arguments, earlier 5.x reads ``past_key_values``."""
    out = output_cls(cache=cache, **fields)
    if cache is not None and not _CACHE_RENAMED:
        out.past_key_values = cache
    return out


def packed_sequence_ids(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Which packed sequence each token belongs to (``[B, S]``), from position ids that restart
    (``[[0, 1, 0, 1, 2]]`` -> ``[[0, 0, 1, 1, 1]]``), as transformers'
    ``find_packed_sequence_indices``; ``None`` when every row holds one sequence."""
    first = position_ids[:, :1] - 1
    ids = (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)
    return None if bool((ids[:, -1] == 0).all()) else ids


def _causal_mask(
    attention_mask: torch.Tensor | None,
    batch: int,
    q_len: int,
    past: int,
    device,
    explicit: bool = False,
    packed: torch.Tensor | None = None,
) -> torch.Tensor | bool:
    """What SDPA gets: ``True`` (plain causal), ``False`` (no mask: one query over the whole
    cache) or a boolean ``[B, 1, q, past + q]`` mask (padding, a chunk after a cache,
    ``explicit``: a static cache, whose empty slots must be masked, or ``packed``: sequence ids of
    packed sequences, each attending only within itself). A 4-D mask (boolean, or additive float
    with 0 = attend) is used as given."""
    kv_len = past + q_len
    if attention_mask is not None and attention_mask.dim() == 4:
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask == 0
        return attention_mask | ~attention_mask.any(-1, keepdim=True)
    if packed is not None and past == 0:
        causal = torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
        return causal[None, None] & (packed[:, None, :, None] == packed[:, None, None, :])
    if attention_mask is None and not explicit:
        if past == 0:
            return True
        if q_len == 1:
            return False
    elif attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.shape[-1] != kv_len
    ):
        raise ValueError(
            f"attention_mask must be [batch, past + new tokens] = [{batch}, {kv_len}], "
            f"got {tuple(attention_mask.shape)}"
        )
    q_pos = torch.arange(past, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    mask = (k_pos[None, :] <= q_pos[:, None])[None, None].expand(batch, 1, q_len, kv_len)
    if attention_mask is not None:
        mask = mask & attention_mask.to(torch.bool)[:, None, None, :]
    # a fully padded query row would give NaN: let it attend everywhere (its output is unused)
    return mask | ~mask.any(-1, keepdim=True)


class JetMoEModel(JetMoEPreTrainedModel):
    embed_tokens: nn.Embedding

    def __init__(self, config: JetMoEConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(JetMoEBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = JetMoERMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = JetMoERotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @_renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> JetMoEModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a transformers Cache, got {type(cache).__name__}")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:
            use_cache = False
        embeds: torch.Tensor = (
            inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        )
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        batch, q_len = embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        # packed sequences (padding-free batches: position ids restart, no attention mask, no
        # cache) attend only within themselves, as in transformers' masks
        packed = None
        if position_ids is not None and attention_mask is None and cache is None:
            packed = packed_sequence_ids(position_ids.expand(batch, -1))
        positions: torch.Tensor
        if position_ids is not None:
            positions = position_ids
        elif attention_mask is not None:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -q_len:]
        else:
            positions = torch.arange(past, past + q_len, device=embeds.device)[None]
        static = cache is not None and not isinstance(cache, DynamicCache)
        mask = _causal_mask(attention_mask, batch, q_len, past, embeds.device, static, packed)
        cos, sin = self.rotary_emb(embeds, positions)
        if cos.shape[0] != batch:
            cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)

        hidden = embeds
        all_hidden = [] if output_hidden_states else None
        all_weights = [] if output_attentions else None
        logits, indices = [], []
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            # GradientCheckpointingLayer checkpoints the layer in training when enabled
            outputs = layer(
                hidden, cos, sin, mask, cache=cache, output_attentions=output_attentions
            )
            hidden = outputs[0]
            logits += [outputs[1], outputs[3]]
            indices += [outputs[2], outputs[4]]
            if all_weights is not None:
                all_weights.append(outputs[5])
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
            if isinstance(output_hidden_states, list | tuple):
                # transformers 5.x: a list of indices keeps those hidden states (negative ones
                # count from the end), the others are None
                keep = {i % len(all_hidden) for i in output_hidden_states}
                all_hidden = [h if i in keep else None for i, h in enumerate(all_hidden)]
        out = _with_cache(
            JetMoEModelOutput,
            cache,
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_weights) if all_weights is not None else None,
            router_logits=tuple(logits),
            router_expert_index=tuple(indices),
        )
        return out if _return_dict(self.config, return_dict) else out.to_tuple()


def _return_dict(config, return_dict: bool | None) -> bool:
    return config.return_dict if return_dict is None else return_dict


def router_losses(
    router_logits, router_expert_index, attention_mask: torch.Tensor | None = None, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(load-balancing sum, z-loss sum) over the routers, padding left out.

    ``group``: a ``torch.distributed`` process group whose ranks each hold a shard of the batch
    (data parallel); the router statistics are summed over it first, so every rank gets the
    losses of the whole global batch (``routing.all_reduce_statistics``). ``None``: this
    process's tokens only."""
    mask = None
    if attention_mask is not None:
        q_len = router_logits[0].shape[0] // attention_mask.shape[0]
        mask = attention_mask[:, attention_mask.shape[1] - q_len :].reshape(-1)
    stats = [
        router_statistics(lg, ix, mask)
        for lg, ix in zip(router_logits, router_expert_index, strict=True)
    ]
    if group is not None:
        stats = all_reduce_statistics(stats, group)
    lb = torch.stack([balance_from_statistics(s) for s in stats]).sum()
    z = torch.stack([z_loss_from_statistics(s) for s in stats]).sum()
    return lb, z


class JetMoEForCausalLM(JetMoEPreTrainedModel, GenerationMixin):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: JetMoEConfig) -> None:
        super().__init__(config)
        self.model = JetMoEModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # data-parallel group the router losses are summed over (``router_losses``); set by
        # ``jetmoe_model.distributed.shard_model``. None: this process's tokens only.
        self.router_loss_group = None
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @_renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> JetMoECausalLMOutput | tuple:
        """``loss`` is transformers' causal-LM loss (``num_items_in_batch``, ``shift_labels``
        and ``ignore_index`` as in every transformers model); with ``output_router_logits``
        (as transformers' JetMoe) the router losses are added:
        ``+ aux_loss_coef * aux_loss + router_z_loss_coef * z_loss``."""
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
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
        loss = lm_loss = aux = z = None
        if output_router_logits:
            aux, z = router_losses(
                out.router_logits,
                out.router_expert_index,
                attention_mask,
                group=self.router_loss_group,
            )
        if labels is not None or kwargs.get("shift_labels") is not None:
            loss_kwargs = {
                k: kwargs[k] for k in ("num_items_in_batch", "shift_labels", "ignore_index")
                if k in kwargs
            }  # fmt: skip
            lm_loss = self.loss_function(
                logits, labels, vocab_size=self.config.vocab_size, **loss_kwargs
            )
            loss = lm_loss
            if aux is not None and z is not None:
                loss = loss + self.config.aux_loss_coef * aux + self.config.router_z_loss_coef * z
        result = _with_cache(
            JetMoECausalLMOutput,
            out.cache,
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            lm_loss=lm_loss,
            aux_loss=aux,
            z_loss=z,
            router_logits=out.router_logits if output_router_logits else None,
            router_expert_index=out.router_expert_index if output_router_logits else None,
        )
        return result if _return_dict(self.config, return_dict) else result.to_tuple()


class JetMoEForSequenceClassification(GenericForSequenceClassification, JetMoEPreTrainedModel):
    """transformers' sequence classification head (``score`` on the last non-padding token's
    hidden state) over ``JetMoEModel``: ``AutoModelForSequenceClassification`` and the
    ``text-classification`` pipeline work as with transformers' ``JetMoeForSequenceClassification``
    (same weight names)."""

    _check_released_layout = False  # its score head is not in the released layout

    def __init__(self, config: JetMoEConfig) -> None:
        JetMoEPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels if config.num_labels is not None else 2
        self.model = JetMoEModel(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value


__all__ = [
    "JetMoECausalLMOutput",
    "JetMoEForCausalLM",
    "JetMoEForSequenceClassification",
    "JetMoEModel",
    "JetMoEPreTrainedModel",
    "JetMoERotaryEmbedding",
    "router_losses",
]
