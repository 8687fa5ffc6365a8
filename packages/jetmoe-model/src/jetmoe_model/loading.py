"""Checkpoint validation and loading under the released weight names.

``check_checkpoint(config, path_or_state_dict)`` compares a checkpoint's tensor names and shapes
(read from headers only, via ``tensor_utils.checkpoint``) with what ``config`` builds and raises
``CheckpointMismatchError`` with a one-line reason: the first mismatching tensor, the shape the
config implies and the config keys behind it. ``load_checkpoint(path)`` validates, builds the
model and streams the tensors in one at a time. ``JetMoEForCausalLM.from_pretrained`` on a local
directory runs the same check first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tensor_utils.checkpoint import open_checkpoint

from .configuration import JetMoEConfig


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the config."""


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
    config: JetMoEConfig, source: str | os.PathLike | dict[str, torch.Tensor]
) -> dict[str, tuple[int, ...]]:
    """Raise ``CheckpointMismatchError`` unless ``source`` (a path or a state dict) holds
    exactly the tensors ``config`` builds (``lm_head.weight`` may be absent when tied).
    Returns the checkpoint's shapes."""
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


def load_checkpoint(
    path: str | os.PathLike,
    config: JetMoEConfig | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    **config_overrides,
):
    """Build ``JetMoEForCausalLM`` from a checkpoint directory (released names, either config
    spelling), checking every shape first and streaming tensors one at a time."""
    from .modeling import JetMoEForCausalLM

    path = Path(path)
    if config is None:
        cfg_file = path / "config.json" if path.is_dir() else path.parent / "config.json"
        if not cfg_file.exists():
            raise FileNotFoundError(f"no config.json next to {path}; pass config=")
        config = JetMoEConfig(**{**json.loads(cfg_file.read_text()), **config_overrides})
    check_checkpoint(config, path)
    with torch.device("meta"):
        model = JetMoEForCausalLM(config)
    model = model.to_empty(device=device)
    if dtype is not None:
        model = model.to(dtype)
    params = dict(model.named_parameters(remove_duplicate=False))
    with open_checkpoint(path) as ckpt, torch.no_grad():
        for name, tensor in ckpt.iter_tensors():
            if name in params:
                params[name].copy_(tensor)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


__all__ = [
    "CheckpointMismatchError",
    "check_checkpoint",
    "expected_shapes",
    "load_checkpoint",
]
