"""Reference checkpoints (XuezheMax/megalodon ``Mega``) -> this package's names.

Inside a layer the names are the same; only the top level differs::

    embed.weight                 -> model.embed.weight
    layers.{i}.*                 -> model.layers.{i}.*
    output.final_norm.*          -> model.final_norm.*
    output.output.weight         -> lm_head.weight
    rope.freqs                   (dropped: recomputed from rope_theta)

The reference's config (``ModelConf`` fields ``model_dim``, ``num_layers``, ``num_heads``,
``z_dim``, ``value_dim``, ``ffn_hidden_dim``, ``chunk_size``, ``norm_num_groups``, ``swiglu``,
``rope_base``, ``share_emb``, ...) is read by ``MegalodonConfig`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .configuration import MegalodonConfig

_RENAMES = (
    ("output.final_norm.", "model.final_norm."),
    ("output.output.", "lm_head."),
    ("embed.", "model.embed."),
    ("layers.", "model.layers."),
)


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference state dict's tensors (a ``module.`` / FSDP ``_fsdp_wrapped_module.``
    prefix is stripped); raises ``KeyError`` with one line on a name it does not know."""
    out = {}
    for name, tensor in state_dict.items():
        clean = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        clean = clean.removeprefix("module.")
        if clean == "rope.freqs":
            continue
        for old, new in _RENAMES:
            if clean.startswith(old):
                out[new + clean[len(old) :]] = tensor
                break
        else:
            raise KeyError(f"reference checkpoint tensor {name!r} has no Megalodon counterpart")
    return out


def load_reference_checkpoint(path: str | os.PathLike, config: MegalodonConfig):
    """Build ``MegalodonForCausalLM(config)`` from a consolidated reference checkpoint (a
    ``torch.save``d state dict, or a dict holding it under ``"model"``)."""
    from .modeling import MegalodonForCausalLM

    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    state = convert_reference_state_dict(data)
    model = MegalodonForCausalLM(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ValueError(
            f"reference checkpoint {path} does not fit the config: {len(missing)} missing, "
            f"{len(unexpected)} unexpected tensor(s), first {first!r}"
        )
    return model.eval()


__all__ = ["convert_reference_state_dict", "load_reference_checkpoint"]
