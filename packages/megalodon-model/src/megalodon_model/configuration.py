"""``MegalodonConfig``: the reference repository's ``ModelConf`` as a transformers config.

The reference names (``model_dim``, ``num_layers``, ``num_heads``, ``ffn_hidden_dim``,
``rope_base``, ``share_emb``) are accepted as aliases of transformers' names; the same value
under both names is fine, two different values are an error. Keys this config does not know are
kept as attributes (transformers' behaviour), so configs from newer versions still load.
Contradictory values are refused with one line (``MegalodonConfigError``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PreTrainedConfig

BACKENDS = ("auto", "reference")
CEMA_BACKENDS = (*BACKENDS, "chunked", "fft", "triton")
NORM_BACKENDS = (*BACKENDS, "triton")


class MegalodonConfigError(ValueError):
    """A Megalodon config value that cannot describe a model."""


AUTO_MAP = {
    "AutoConfig": "megalodon_model.configuration.MegalodonConfig",
    "AutoModel": "megalodon_model.modeling.MegalodonModel",
    "AutoModelForCausalLM": "megalodon_model.modeling.MegalodonForCausalLM",
}

# reference ModelConf name -> transformers name
ALIASES = {
    "model_dim": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "ffn_hidden_dim": "intermediate_size",
    "rope_base": "rope_theta",
    "share_emb": "tie_word_embeddings",
}

# defaults: the reference's `mega200M` preset shape and `ModelConf` defaults
DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "num_attention_heads": 1,
    "z_dim": 256,
    "value_dim": 2048,
    "intermediate_size": 2560,
    "cema_ndim": 16,
    "chunk_size": 2048,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "norm_affine": True,
    "prior_count": 0,  # TimestepNorm prior (learnable mean/log-variance when > 0)
    "swiglu": False,
    "rescale_nffn": False,
    "scale_emb": False,
    "rope_theta": 10000.0,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "hidden_dropout": 0.0,
    "initializer_range": 0.02,
    "cema_backend": "auto",
    "norm_backend": "auto",
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
}
_INTS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "z_dim",
    "value_dim", "intermediate_size", "cema_ndim", "chunk_size", "norm_num_groups",
)  # fmt: skip


class MegalodonConfig(PreTrainedConfig):
    """Hyper-parameters of a Megalodon model (defaults: the reference's 200M preset).

    ``z_dim``: width of the shared query/key representation (all heads); ``value_dim``: width of
    the values (all heads); ``cema_ndim``: EMA dimensions per channel (N); ``chunk_size``:
    attention chunk length; ``norm_num_groups``: TimestepNorm groups; ``prior_count``: tokens of
    TimestepNorm's learnable prior (0: none); ``rescale_nffn``: layer scale 0.1 * 0.5^layer on
    the FFN output; ``scale_emb``: multiply embeddings by sqrt(hidden_size);
    ``cema_backend``/``norm_backend``: which op backend runs (``auto`` picks Triton on CUDA).
    """

    model_type = "megalodon"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values", "cache"]
    attribute_map: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs: Any) -> None:
        values = dict(DEFAULTS)
        seen: dict[str, str] = {}
        rest: dict[str, Any] = {}
        for key, value in kwargs.items():
            canonical = ALIASES.get(key, key)
            if canonical in DEFAULTS:
                if canonical in seen and values[canonical] != value:
                    raise MegalodonConfigError(
                        f"MegalodonConfig: {seen[canonical]}={values[canonical]!r} and "
                        f"{key}={value!r} name the same setting with different values"
                    )
                values[canonical], seen[canonical] = value, key
            elif canonical == "tie_word_embeddings":
                if "tie_word_embeddings" in rest and rest["tie_word_embeddings"] != value:
                    raise MegalodonConfigError(
                        "MegalodonConfig: share_emb and tie_word_embeddings disagree"
                    )
                rest["tie_word_embeddings"] = value
            else:
                rest[key] = value
        rest.setdefault("tie_word_embeddings", False)
        # where the classes live: `import megalodon_model` registers them with the Auto classes
        rest.setdefault("auto_map", dict(AUTO_MAP))
        for key, value in values.items():
            setattr(self, key, value)
        self.rope_theta = float(self.rope_theta)
        self._validate()
        super().__init__(**rest)

    def _validate(self) -> None:
        for key in _INTS:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MegalodonConfigError(
                    f"MegalodonConfig: {key} must be a positive int, got {value!r}"
                )
        d, h = self.hidden_size, self.num_attention_heads
        if d % self.norm_num_groups:
            raise MegalodonConfigError(
                f"MegalodonConfig: norm_num_groups={self.norm_num_groups} does not divide "
                f"hidden_size={d}"
            )
        for key in ("z_dim", "value_dim"):
            if getattr(self, key) % h:
                raise MegalodonConfigError(
                    f"MegalodonConfig: num_attention_heads={h} does not divide "
                    f"{key}={getattr(self, key)}"
                )
        if (self.z_dim // h) % 2:
            raise MegalodonConfigError(
                f"MegalodonConfig: the query/key head width z_dim/num_attention_heads="
                f"{self.z_dim // h} must be even for rotary embeddings"
            )
        if not isinstance(self.prior_count, int) or self.prior_count < 0:
            raise MegalodonConfigError(
                f"MegalodonConfig: prior_count must be an int >= 0, got {self.prior_count!r}"
            )
        if self.norm_num_groups == d and self.prior_count < 2:
            raise MegalodonConfigError(
                "MegalodonConfig: one feature per TimestepNorm group needs prior_count >= 2 "
                "(a single value has no variance; the reference asserts the same)"
            )
        for key in ("norm_eps", "rope_theta"):
            if not float(getattr(self, key)) > 0:
                raise MegalodonConfigError(f"MegalodonConfig: {key} must be > 0")
        for key in ("dropout", "attention_dropout", "hidden_dropout"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise MegalodonConfigError(f"MegalodonConfig: {key} must be in [0, 1)")
        if self.cema_backend not in CEMA_BACKENDS:
            raise MegalodonConfigError(
                f"MegalodonConfig: cema_backend {self.cema_backend!r} is not one of "
                f"{', '.join(CEMA_BACKENDS)}"
            )
        if self.norm_backend not in NORM_BACKENDS:
            raise MegalodonConfigError(
                f"MegalodonConfig: norm_backend {self.norm_backend!r} is not one of "
                f"{', '.join(NORM_BACKENDS)}"
            )

    @property
    def z_head_dim(self) -> int:
        return self.z_dim // self.num_attention_heads

    @property
    def v_head_dim(self) -> int:
        return self.value_dim // self.num_attention_heads


__all__ = ["ALIASES", "CEMA_BACKENDS", "NORM_BACKENDS", "MegalodonConfig", "MegalodonConfigError"]
