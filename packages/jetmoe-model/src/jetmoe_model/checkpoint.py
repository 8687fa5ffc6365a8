"""Checkpoint validation: the tensor names and shapes a config builds.

``check_checkpoint(config, path_or_state_dict)`` compares a checkpoint's tensor names and shapes
(read from headers only, via ``tensor_utils.checkpoint``) with what ``config`` builds and raises
``CheckpointMismatchError`` with a one-line reason: the first mismatching tensor, the shape the
config implies and the config keys behind it. Both ``load_checkpoint`` and
``JetMoEForCausalLM.from_pretrained`` (on a local directory) run it first; it imports neither, so
the model module and the loader depend on it and not on each other.
"""

from __future__ import annotations

import os

import torch

from tensor_utils.checkpoint import open_checkpoint

from .configuration import JetMoEConfig


class CheckpointMismatchError(ValueError, RuntimeError):
    """The checkpoint's tensors do not fit the config (a ``RuntimeError`` too, what transformers
    raises for mismatched sizes)."""


def expected_shapes(config: JetMoEConfig, prefix: str = "model.") -> dict[str, tuple[int, ...]]:
    """Every parameter of ``JetMoEForCausalLM(config)`` (``prefix=""``: of ``JetMoEModel``)."""
    d, e = config.hidden_size, config.num_local_experts
    att, f = config.attention_size, config.intermediate_size
    shapes = {
        f"{prefix}embed_tokens.weight": (config.vocab_size, d),
        f"{prefix}norm.weight": (d,),
    }
    for i in range(config.num_hidden_layers):
        p = f"{prefix}layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "self_attention.experts.input_linear.weight": (e, att, d),
            p + "self_attention.experts.output_linear.weight": (e, d, att),
            p + "self_attention.experts.bias": (d,),
            p + "self_attention.experts.router.layer.weight": (e, d),
            p + "self_attention.kv_proj.weight": (2 * att, d),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.input_linear.weight": (e, 2 * f, d),
            p + "mlp.output_linear.weight": (e, d, f),
            p + "mlp.bias": (d,),
            p + "mlp.router.layer.weight": (e, d),
        }
    if prefix:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    return shapes


_WHY = {
    "embed_tokens": "vocab_size x hidden_size",
    "lm_head": "vocab_size x hidden_size",
    "norm": "hidden_size",
    "layernorm": "hidden_size",
    "experts.input_linear": "num_local_experts x (num_key_value_heads*kv_channels) x hidden_size",
    "experts.output_linear": "num_local_experts x hidden_size x (num_key_value_heads*kv_channels)",
    "kv_proj": "(2*num_key_value_heads*kv_channels) x hidden_size",
    "mlp.input_linear": "num_local_experts x (2*intermediate_size) x hidden_size",
    "mlp.output_linear": "num_local_experts x hidden_size x intermediate_size",
    "router": "num_local_experts x hidden_size",
    "bias": "hidden_size",
}


def _why(name: str) -> str:
    for key, why in _WHY.items():
        if key in name:
            return why
    return "the config"


def _shapes_of(source) -> dict[str, tuple[int, ...]]:
    if isinstance(source, dict):
        return {k: tuple(v.shape) for k, v in source.items()}
    with open_checkpoint(source) as ckpt:
        return {name: tuple(info.shape) for name, info in ckpt.tensors.items()}


def check_checkpoint(
    config: JetMoEConfig,
    source: str | os.PathLike | dict[str, torch.Tensor],
    *,
    complete: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Raise ``CheckpointMismatchError`` unless ``source`` (a path or a state dict) holds
    exactly the tensors ``config`` builds (``lm_head.weight`` may be absent when tied).
    ``complete=False`` checks only the shapes of the tensors present (missing and extra ones are
    left to the caller's report). Returns the checkpoint's shapes."""
    found = _shapes_of(source)
    prefix = "model." if any(k.startswith("model.") for k in found) else ""
    expected = expected_shapes(config, prefix)
    if prefix and config.tie_word_embeddings:
        found_lm = found.get("lm_head.weight")
        if found_lm is None:
            expected.pop("lm_head.weight")
    where = f" in {source}" if not isinstance(source, dict) else ""
    for name, shape in expected.items():
        if name in found and found[name] != shape:
            raise CheckpointMismatchError(
                f"checkpoint tensor {name}{where} has shape {list(found[name])} but the config "
                f"builds {list(shape)} ({_why(name)}); check the config against the checkpoint"
            )
    if not complete:
        return found
    missing = [n for n in expected if n not in found]
    if missing:
        raise CheckpointMismatchError(
            f"checkpoint{where} lacks {len(missing)} tensor(s) the config builds, first "
            f"{missing[0]} (num_hidden_layers={config.num_hidden_layers})"
        )
    extra = [n for n in found if n not in expected and not n.endswith("rotary_emb.inv_freq")]
    if extra:
        raise CheckpointMismatchError(
            f"checkpoint{where} has {len(extra)} tensor(s) the config does not build, first "
            f"{extra[0]} (num_hidden_layers={config.num_hidden_layers}?)"
        )
    return found


__all__ = ["CheckpointMismatchError", "check_checkpoint", "expected_shapes"]
