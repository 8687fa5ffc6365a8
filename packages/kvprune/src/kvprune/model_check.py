"""Which models the ragged cache can serve, and the shapes it reads from their configs."""

from __future__ import annotations

from .errors import UnsupportedError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


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
