"""transformers ``Trainer`` integration (needs the ``hf`` extra: ``transformers>=5.0``).

    from transformers import Trainer, TrainingArguments
    from galore_optim.hf import galore_optimizer_cls_and_kwargs

    args = TrainingArguments(output_dir="out", learning_rate=1e-3, ...)
    trainer = Trainer(
        model=model, args=args, train_dataset=ds,
        optimizer_cls_and_kwargs=galore_optimizer_cls_and_kwargs(model, args, rank=64),
    )

The Trainer builds its learning-rate scheduler on this one optimizer (one LR clock), clips
gradients and accumulates them as usual, and saves ``optimizer.pt`` from ``state_dict()``,
which holds only tensors, ints, floats and strings (loads with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

try:  # the `hf` extra: fail here, with one line, rather than later inside Trainer
    import accelerate  # noqa: F401  (Trainer refuses to run without it)
    import transformers  # noqa: F401
except ImportError as err:
    raise ImportError(
        f"galore_optim.hf needs the `hf` extra ({err.name} is not installed): "
        'pip install "galore-optim[hf]"'
    ) from None

from .adafactor import GaLoreAdafactor
from .adamw import GaLoreAdamW
from .adamw8bit import GaLoreAdamW8bit
from .param_groups import galore_param_groups

OPTIMIZERS = {
    "galore_adamw": GaLoreAdamW,
    "galore_adamw_8bit": GaLoreAdamW8bit,
    "galore_adafactor": GaLoreAdafactor,
}


def galore_optimizer_cls_and_kwargs(
    model: nn.Module,
    args: Any,
    *,
    optimizer: str = "galore_adamw",
    target_modules: str | Sequence[str] | None = None,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    proj_type: str = "std",
    **galore_kwargs,
) -> tuple[type, dict[str, Any]]:
    """``(optimizer_cls, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)``.

    ``args`` is the ``TrainingArguments``: its ``learning_rate``, ``weight_decay``, Adam betas
    and epsilon are used, and its ``optim_target_modules`` when ``target_modules`` is None
    (default then: ``["attn", "mlp"]``). ``optimizer`` is one of ``galore_adamw``,
    ``galore_adamw_8bit``, ``galore_adafactor`` (transformers' names).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    targets = target_modules or getattr(args, "optim_target_modules", None) or ["attn", "mlp"]
    wd = float(getattr(args, "weight_decay", 0.0))
    groups = galore_param_groups(
        model,
        targets,
        rank=rank,
        update_proj_gap=update_proj_gap,
        scale=scale,
        proj_type=proj_type,
        weight_decay=wd,
        **galore_kwargs,
    )
    lr = float(args.learning_rate)
    cls = OPTIMIZERS[optimizer]
    if cls is GaLoreAdafactor:
        kwargs: dict[str, Any] = {
            "lr": lr,
            "scale_parameter": False,
            "relative_step": False,
            "warmup_init": False,
            "weight_decay": wd,
        }
    else:
        kwargs = {
            "lr": lr,
            "betas": (args.adam_beta1, args.adam_beta2),
            "eps": args.adam_epsilon,
            "weight_decay": wd,
        }
    kwargs["params"] = groups  # Trainer pops "params" and uses it as the param groups
    return cls, kwargs
