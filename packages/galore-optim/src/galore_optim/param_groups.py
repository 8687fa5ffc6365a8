"""Build GaLore param groups for a model from target module names (transformers' rules)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from .base import GALORE_DEFAULTS


def _matches(target: str | Sequence[str], name: str) -> bool:
    """transformers' ``check_target_module_exists``: a string is a full-match regex; a list
    matches a name listed exactly, a listed substring, or a listed full-match regex."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    if name in target:
        return True
    if any(t in name for t in target):
        return True
    return any(re.fullmatch(t, name) is not None for t in target)


def galore_target_names(
    model: nn.Module,
    target_modules: str | Sequence[str],
    *,
    exclude: Sequence[str] = ("lm_head",),
) -> list[str]:
    """Names of the ``nn.Linear`` weights GaLore will project.

    ``target_modules`` follows ``TrainingArguments.optim_target_modules``: a list of names or
    substrings (e.g. ``["attn", "mlp"]``, GaLore's pre-training recipe), a regex string, or
    ``"all-linear"``. Only ``nn.Linear`` modules qualify. ``exclude`` drops modules whose name
    contains any of its strings (default: the LM head, as GaLore's recipes do).
    """
    if not isinstance(target_modules, (str, list, tuple)):
        raise TypeError(
            f"target_modules must be a list of strings, a regex string or 'all-linear', got {type(target_modules).__name__}"
        )
    all_linear = (
        isinstance(target_modules, str) and target_modules.replace("_", "-") == "all-linear"
    )
    names = []
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(e in module_name for e in exclude):
            continue
        if all_linear or _matches(target_modules, module_name):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def galore_param_groups(
    model: nn.Module,
    target_modules: str | Sequence[str] = ("attn", "mlp"),
    *,
    rank: int = 128,
    update_proj_gap: int = GALORE_DEFAULTS["update_proj_gap"],
    scale: float = GALORE_DEFAULTS["scale"],
    proj_type: str = GALORE_DEFAULTS["proj_type"],
    exclude: Sequence[str] = ("lm_head",),
    weight_decay: float | None = None,
    no_decay: Sequence[str] = ("bias", "norm"),
    **galore_kwargs,
) -> list[dict]:
    """``[galore_group, plain_group(s)]`` for :class:`GaLoreAdamW` and friends.

    The GaLore group holds the matched ``nn.Linear`` weights with ``rank``, ``update_proj_gap``,
    ``scale``, ``proj_type`` and any extra GaLore keys (``solver=``, ``stagger=``, ...); every
    other trainable parameter (embeddings, norms, biases, LM head) goes to a plain group. With
    ``weight_decay`` set, plain params whose name contains a ``no_decay`` string get 0.
    Tied weights appear once. Raises when nothing matches.
    """
    targets = set(galore_target_names(model, target_modules, exclude=exclude))
    if not targets:
        raise ValueError(f"no nn.Linear module matches target_modules={target_modules!r}")
    galore, decay, plain_no_decay = [], [], []
    for name, p in model.named_parameters():  # deduplicates tied parameters
        if not p.requires_grad:
            continue
        if name in targets and p.dim() == 2:
            galore.append(p)
        elif weight_decay is not None and any(k in name.lower() for k in no_decay):
            plain_no_decay.append(p)
        else:
            decay.append(p)
    if not galore:
        raise ValueError(
            f"target_modules={target_modules!r} matched only frozen or tied parameters"
        )
    g = {
        "params": galore,
        "rank": rank,
        "update_proj_gap": update_proj_gap,
        "scale": scale,
        "proj_type": proj_type,
        **galore_kwargs,
    }
    groups = [g]
    if weight_decay is not None:
        g["weight_decay"] = weight_decay
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay})
        if plain_no_decay:
            groups.append({"params": plain_no_decay, "weight_decay": 0.0})
    elif decay:
        groups.append({"params": decay})
    return groups
