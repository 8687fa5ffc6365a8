"""Which models dejavu-sparse patches: transformers Llama-family decoders (SwiGLU MLP, GQA).

Llama (SmolLM2 is one), Mistral and Qwen2 share the module layout this package relies on: each
decoder layer has ``self_attn`` with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and ``mlp`` with
``gate_proj``/``up_proj``/``down_proj`` and a SiLU gate.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from .errors import DejaVuSparseError

SUPPORTED = ("llama", "mistral", "qwen2")


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a supported model; one-line error for anything else."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    if model_type not in SUPPORTED:
        raise DejaVuSparseError(
            f"unsupported architecture {model_type!r}: dejavu-sparse patches Llama-family "
            f"models ({', '.join(SUPPORTED)})"
        )
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None or not len(layers):
        raise DejaVuSparseError(f"{model_type} model has no decoder layers at .model.layers")
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        if attn is None or not all(isinstance(getattr(attn, n, None), nn.Linear) for n in names):
            raise DejaVuSparseError(f"{model_type} layer has no q/k/v/o_proj attention")
        names = ("gate_proj", "up_proj", "down_proj")
        if mlp is None or not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in names):
            raise DejaVuSparseError(f"{model_type} layer has no gated (SwiGLU) MLP")
        act = getattr(config, "hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise DejaVuSparseError(f"{model_type} MLP activation {act!r} is not SiLU")
    return list(layers)


def model_facts(model: Any) -> dict:
    """What a calibration must match: architecture, shapes and a fingerprint of the weights."""
    layers = decoder_layers(model)
    c = model.config
    attn = layers[0].self_attn
    h = hashlib.sha256()
    for layer in (layers[0], layers[-1]):
        for w in (layer.self_attn.q_proj.weight, layer.mlp.down_proj.weight):
            h.update(w.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return {
        "name": str(getattr(c, "_name_or_path", "") or getattr(c, "name_or_path", "")),
        "model_type": c.model_type,
        "num_layers": len(layers),
        "hidden_size": int(c.hidden_size),
        "intermediate_size": int(layers[0].mlp.gate_proj.out_features),
        "num_heads": int(c.num_attention_heads),
        "num_kv_heads": int(getattr(c, "num_key_value_heads", c.num_attention_heads)),
        "head_dim": int(getattr(attn, "head_dim", c.hidden_size // c.num_attention_heads)),
        "fingerprint": h.hexdigest()[:16],
    }


def rms(z: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMS normalisation in float32 (the predictors' input)."""
    z = z.float()
    return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)
