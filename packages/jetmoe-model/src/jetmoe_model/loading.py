"""Loading a checkpoint directory under the released weight names.

``load_checkpoint(path)`` validates the checkpoint against the config (``checkpoint.py``), builds
the model on the meta device and streams the tensors in one at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tensor_utils.checkpoint import open_checkpoint

from .checkpoint import (  # the validation names are re-exported with the loader
    CheckpointMismatchError,
    check_checkpoint,
    expected_shapes,
)
from .configuration import JetMoEConfig
from .modeling import JetMoEForCausalLM


def load_checkpoint(
    path: str | os.PathLike,
    config: JetMoEConfig | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    **config_overrides,
) -> JetMoEForCausalLM:
    """Build ``JetMoEForCausalLM`` from a checkpoint directory (released names, either config
    spelling), checking every shape first and streaming tensors one at a time."""
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
        model.to(dtype)  # pyright: ignore[reportArgumentType]  (transformers' to() stub)
    model.model.rotary_emb.reset_frequencies()  # float32 buffers, not in the checkpoint
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
