"""``JetMoEConfig``: one config that reads both spellings of JetMoE's hyper-parameters.

The released checkpoints (``jetmoe/jetmoe-8b``, myshell-ai/JetMoE) name them ``ffn_hidden_size``,
``moe_num_experts``, ``moe_top_k``, ``num_layers``, ``n_positions``, ``layer_norm_epsilon`` and
carry ``num_attention_heads``, ``bias``, ``glu`` and ``rotary_percent``; transformers' port names
them ``intermediate_size``, ``num_local_experts``, ``num_experts_per_tok``, ... Both are accepted
(the same value under two names is fine, two different values are an error); the config is
saved under transformers' names, so transformers' own ``JetMoeConfig`` can read it back.

Keys neither spelling knows are kept as attributes, as transformers' configs keep them
(``quantization_config`` and keys other tools write load and save back unchanged); a key one or
two letters away from a JetMoE key (``hidden_sise``) raises ``JetMoEConfigError``: a typo must not
silently build a different model.

The saved ``config.json`` carries ``auto_map`` (``AUTO_MAP``) pointing at ``jetmoe_auto.py``, a
two-line module written next to it that imports this package: ``AutoModelForCausalLM
.from_pretrained(path, trust_remote_code=True)`` then builds these classes whatever the process
imported before, and without ``trust_remote_code`` transformers builds its own ``JetMoe*``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, ClassVar

from transformers import GenerationConfig, PreTrainedConfig

EXPERT_BACKENDS = ("auto", "reference", "loop", "grouped_mm", "triton")


class JetMoEConfigError(ValueError):
    """A JetMoE config key or value that cannot describe a model."""


# hub / original-code name -> transformers name
ALIASES = {
    "ffn_hidden_size": "intermediate_size",
    "moe_num_experts": "num_local_experts",
    "moe_top_k": "num_experts_per_tok",
    "num_layers": "num_hidden_layers",
    "n_positions": "max_position_embeddings",
    "layer_norm_epsilon": "rms_norm_eps",
    "head_dim": "kv_channels",
    "z_loss_coef": "router_z_loss_coef",
}

DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "num_hidden_layers": 12,
    "num_key_value_heads": 16,
    "kv_channels": 128,
    "intermediate_size": 5632,
    "max_position_embeddings": 4096,
    "activation_function": "silu",
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "output_router_logits": False,
    "aux_loss_coef": 0.01,  # alpha: Switch load balancing, summed over all routers
    "router_z_loss_coef": 0.001,  # beta: router z-loss (ST-MoE), summed over all routers
    "use_cache": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,  # final norm only; block norms use block_norm_eps
    "block_norm_eps": 1e-6,  # fixed in the released code and transformers' port
    "initializer_range": 0.01,
    "attention_dropout": 0.0,
    "expert_backend": "auto",
}

# Keys of the released config that only describe fixed parts of the architecture: accepted when
# they hold the value this implementation builds, refused otherwise.
FIXED = {"bias": True, "glu": True, "rotary_percent": 1.0}

# Generic PreTrainedConfig / generation keys every config.json may carry.
_GENERIC = (
    set(PreTrainedConfig().to_dict())
    | set(GenerationConfig._get_default_generation_params())
    | {
        "torch_dtype",
        "dtype",
        "name_or_path",
        "_name_or_path",
        "_commit_hash",
        "architectures",
        "auto_map",
        "transformers_version",
        "model_type",
        "num_labels",
        "attn_implementation",
        "_attn_implementation_autoset",
        "experts_implementation",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "keys_to_ignore_at_inference",
        "rope_scaling",
        "tokenizer_class",
        "prefix",
        "sep_token_id",
        "decoder_start_token_id",
        "task_specific_params",
        "finetuning_task",
        "tie_encoder_decoder",
        "cross_attention_hidden_size",
        "add_cross_attention",
        "is_decoder",
        "pruned_heads",
        "torchscript",
    }
)


# The module ``save_pretrained`` writes next to config.json for ``auto_map`` (transformers loads
# it with ``trust_remote_code=True``; it only re-exports this installed package's classes).
AUTO_MODULE = "jetmoe_auto"
AUTO_MAP = {
    "AutoConfig": f"{AUTO_MODULE}.JetMoEConfig",
    "AutoModel": f"{AUTO_MODULE}.JetMoEModel",
    "AutoModelForCausalLM": f"{AUTO_MODULE}.JetMoEForCausalLM",
    "AutoModelForSequenceClassification": f"{AUTO_MODULE}.JetMoEForSequenceClassification",
}
AUTO_MODULE_SOURCE = (
    '"""Written by jetmoe-model\'s save_pretrained: config.json\'s auto_map points here."""\n\n'
    "from jetmoe_model import (  # noqa: F401\n"
    "    JetMoEConfig,\n    JetMoEForCausalLM,\n    JetMoEForSequenceClassification,\n"
    "    JetMoEModel,\n)\n"
)


def write_auto_module(save_directory: str | os.PathLike) -> None:
    """Write ``jetmoe_auto.py`` (what ``auto_map`` names) into ``save_directory``."""
    path = Path(save_directory) / f"{AUTO_MODULE}.py"
    if path.parent.is_dir():
        path.write_text(AUTO_MODULE_SOURCE)


def _typo_of(key: str) -> str | None:
    """The JetMoE key ``key`` is most likely a misspelling of, if any."""
    known = sorted({*DEFAULTS, *ALIASES, *FIXED, "num_attention_heads"})
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.9)
    return close[0] if close else None


def _resolve(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split kwargs into (our canonical values, generic PreTrainedConfig kwargs)."""
    ours: dict[str, Any] = {}
    generic: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in kwargs.items():
        canonical = ALIASES.get(key, key)
        if canonical in DEFAULTS:
            if canonical in ours and ours[canonical] != value:
                raise JetMoEConfigError(
                    f"JetMoEConfig: {sources[canonical]}={ours[canonical]!r} and {key}={value!r} "
                    f"name the same setting with different values"
                )
            ours[canonical] = value
            sources[canonical] = key
        elif key in ("num_attention_heads", "rope_parameters", *FIXED):
            ours[key] = value
        elif key in _GENERIC or (typo := _typo_of(key)) is None:
            generic[key] = value  # unknown keys become attributes, as in transformers' configs
        else:
            raise JetMoEConfigError(
                f"JetMoEConfig: unknown config key {key!r} (did you mean {typo!r}?)"
            )
    return ours, generic


class JetMoEConfig(PreTrainedConfig):
    """Hyper-parameters of a JetMoE model (defaults: transformers' 12-layer JetMoe config).

    ``num_attention_heads`` is derived: ``num_key_value_heads * num_experts_per_tok`` (each of
    the top-k attention experts contributes ``num_key_value_heads`` query heads that share the
    layer's K/V heads). ``aux_loss_coef`` (alpha) weights the load-balancing loss and
    ``router_z_loss_coef`` (beta) the router z-loss, each summed over all 2 x num_layers routers
    (paper: alpha 0.01, beta 0.001). ``expert_backend`` picks the expert operator
    (``auto``, ``reference``/``loop``, ``grouped_mm``, ``triton``).
    """

    model_type = "jetmoe"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values", "cache"]

    def __init__(self, **kwargs: Any) -> None:
        ours, generic = _resolve(kwargs)
        values = {**DEFAULTS, **{k: v for k, v in ours.items() if k in DEFAULTS}}
        # RoPE as transformers' configs take it: ``rope_parameters`` (``rope_type`` one of
        # transformers' ROPE_INIT_FUNCTIONS or "default"), or the legacy ``rope_scaling`` dict
        rope = generic.pop("rope_scaling", None) or ours.get("rope_parameters")
        if rope is not None and not isinstance(rope, dict):
            raise JetMoEConfigError(
                f"JetMoEConfig: rope_parameters must be a dict, got {type(rope).__name__}"
            )
        rope = dict(rope or {})
        if "rope_theta" in rope and "rope_theta" not in ours:
            values["rope_theta"] = rope["rope_theta"]
        for key, expected in FIXED.items():
            if key in ours and ours[key] != expected:
                raise JetMoEConfigError(
                    f"JetMoEConfig: {key}={ours[key]!r} is not supported (JetMoE uses {expected!r})"
                )
        for key, value in values.items():
            setattr(self, key, value)
        self.rope_theta = float(self.rope_theta)
        rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
        rope.pop("type", None)  # the legacy spelling of rope_type
        self.rope_parameters = {"rope_type": rope_type, **rope, "rope_theta": self.rope_theta}
        self._validate(ours.get("num_attention_heads"))
        self.num_attention_heads = self.num_key_value_heads * self.num_experts_per_tok
        self._validate_rope()
        super().__init__(**generic)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["auto_map"] = {**AUTO_MAP, **(out.get("auto_map") or {})}
        return out

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        write_auto_module(save_directory)

    def _validate(self, num_attention_heads: int | None) -> None:
        for key in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_key_value_heads",
            "kv_channels",
            "intermediate_size",
            "num_local_experts",
            "num_experts_per_tok",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise JetMoEConfigError(
                    f"JetMoEConfig: {key} must be a positive int, got {value!r}"
                )
        if self.num_experts_per_tok > self.num_local_experts:
            raise JetMoEConfigError(
                f"JetMoEConfig: top-k (num_experts_per_tok/moe_top_k={self.num_experts_per_tok}) "
                f"is larger than the number of experts (num_local_experts/moe_num_experts="
                f"{self.num_local_experts})"
            )
        if self.kv_channels % 2:
            raise JetMoEConfigError(
                f"JetMoEConfig: kv_channels must be even for rotary embeddings, got {self.kv_channels}"
            )
        expected_heads = self.num_key_value_heads * self.num_experts_per_tok
        if num_attention_heads is not None and num_attention_heads != expected_heads:
            raise JetMoEConfigError(
                f"JetMoEConfig: num_attention_heads={num_attention_heads} but JetMoE has "
                f"num_key_value_heads x top-k = {self.num_key_value_heads} x "
                f"{self.num_experts_per_tok} = {expected_heads} query heads"
            )
        if self.expert_backend not in EXPERT_BACKENDS:
            raise JetMoEConfigError(
                f"JetMoEConfig: expert_backend {self.expert_backend!r} is not one of "
                f"{', '.join(EXPERT_BACKENDS)}"
            )
        from transformers.activations import ACT2FN

        if self.activation_function not in ACT2FN:
            raise JetMoEConfigError(
                f"JetMoEConfig: unknown activation_function {self.activation_function!r}"
            )

    def _validate_rope(self) -> None:
        """RoPE parameters checked with transformers' own rules (``validate_rope``); an unknown
        ``rope_type`` or a missing or bad parameter is one line."""
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        rope_type = self.rope_parameters["rope_type"]
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            raise JetMoEConfigError(
                f"JetMoEConfig: rope_type {rope_type!r} is not one of default, "
                f"{', '.join(ROPE_INIT_FUNCTIONS)}"
            )
        self.standardize_rope_params()  # e.g. yarn's original_max_position_embeddings
        factor = self.rope_parameters.get("factor", 1.0)
        problem = None
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            problem = f"factor must be a number >= 1, got {factor!r}"  # transformers only warns
        else:
            try:
                self.validate_rope()
            except (KeyError, TypeError, ValueError) as error:
                problem = str(error).strip("\"'")
        if problem is not None:
            raise JetMoEConfigError(
                f"JetMoEConfig: rope_parameters {self.rope_parameters}: {problem}"
            )

    @property
    def head_dim(self) -> int:
        return self.kv_channels

    @property
    def attention_size(self) -> int:
        """Width of one attention expert's query projection: kv heads x head dim."""
        return self.num_key_value_heads * self.kv_channels


__all__ = ["ALIASES", "AUTO_MAP", "EXPERT_BACKENDS", "JetMoEConfig", "JetMoEConfigError"]
