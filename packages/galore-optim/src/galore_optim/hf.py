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
    import transformers
except ImportError as err:
    raise ImportError(
        f"galore_optim.hf needs the `hf` extra ({err.name} is not installed): "
        'pip install "galore-optim[hf]"'
    ) from None

from .adafactor import GaLoreAdafactor
from .adamw import GaLoreAdamW
from .adamw8bit import GaLoreAdamW8bit
from .base import GaLoreOptimizer
from .layerwise import LayerwiseGaLore
from .param_groups import galore_param_groups

OPTIMIZERS = {
    "galore_adamw": GaLoreAdamW,
    "galore_adamw_8bit": GaLoreAdamW8bit,
    "galore_adafactor": GaLoreAdafactor,
}
LAYERWISE_SUFFIX = "_layerwise"
# transformers' `galore_*` optim names: the three optimizers and their layer-wise variants.
OPTIM_NAMES = (*OPTIMIZERS, *(name + LAYERWISE_SUFFIX for name in OPTIMIZERS))
# transformers' defaults for the `optim_args` keys it reads for GaLore, and their types.
OPTIM_ARGS = {"rank": (int, 128), "update_proj_gap": (int, 200), "scale": (float, 0.25)}
OPTIM_ARGS_STR = {"proj_type": "std", "solver": "exact"}
OPTIM_ARGS_BOOL = ("stagger",)


def _optim_name(args: Any) -> str | None:
    optim = getattr(args, "optim", None)
    optim = getattr(optim, "value", optim)  # TrainingArguments stores an OptimizerNames enum
    return optim if isinstance(optim, str) else None


def parse_optim_args(optim_args: str | None) -> dict[str, Any]:
    """GaLore keys from ``TrainingArguments.optim_args`` (``"rank=64, update_proj_gap=100,
    scale=0.1, proj_type=std"``, transformers' format), typed; this package's ``solver`` and
    ``stagger`` are accepted too. Any other key is refused with one line."""
    out: dict[str, Any] = {}
    if not optim_args:
        return out
    for item in optim_args.replace(" ", "").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"optim_args: {item!r} is not key=value")
        if key in OPTIM_ARGS:
            kind = OPTIM_ARGS[key][0]
            try:
                out[key] = kind(value)
            except ValueError:
                raise ValueError(
                    f"optim_args: {key}={value!r} is not {'an int' if kind is int else 'a number'}"
                ) from None
        elif key in OPTIM_ARGS_STR:
            out[key] = value
        elif key in OPTIM_ARGS_BOOL:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"optim_args: {key}={value!r} is not true or false")
            out[key] = value.lower() in ("true", "1")
        else:
            known = (*OPTIM_ARGS, *OPTIM_ARGS_STR, *OPTIM_ARGS_BOOL)
            raise ValueError(f"optim_args: unknown GaLore key {key!r} (known: {', '.join(known)})")
    return out


def _layerwise_class(base: type[GaLoreOptimizer]) -> type[GaLoreOptimizer]:
    """``base`` whose parameters update during backward (:class:`LayerwiseGaLore`) and whose
    ``step()`` finishes the step (clips by one global norm, applies parked updates), so the
    Trainer's own ``optimizer.step()`` / ``zero_grad()`` / LR scheduler drive it unchanged."""

    class Layerwise(base):  # type: ignore[valid-type, misc]
        def __init__(self, params, *, accumulation_steps=1, max_grad_norm=None, **kwargs):
            super().__init__(params, **kwargs)
            self._finishing = False
            self.layerwise = LayerwiseGaLore(
                self, accumulation_steps=accumulation_steps, max_grad_norm=max_grad_norm
            )

        def step(self, closure=None):
            if self._finishing:  # LayerwiseGaLore's own call: hooks and schedulers only
                return super().step(closure)
            self._finishing = True
            try:
                self.layerwise.step()
            finally:
                self._finishing = False
            return None

    Layerwise.__name__ = Layerwise.__qualname__ = f"Layerwise{base.__name__}"
    return Layerwise


def galore_optimizer_cls_and_kwargs(
    model: nn.Module,
    args: Any,
    *,
    optimizer: str | None = None,
    target_modules: str | Sequence[str] | None = None,
    rank: int | None = None,
    update_proj_gap: int | None = None,
    scale: float | None = None,
    proj_type: str | None = None,
    **galore_kwargs,
) -> tuple[type, dict[str, Any]]:
    """``(optimizer_cls, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)``.

    Reads the ``TrainingArguments`` as transformers does for its ``galore_*`` optimizers:
    ``optim`` (one of ``galore_adamw``, ``galore_adamw_8bit``, ``galore_adafactor`` and their
    ``*_layerwise`` variants; anything else means ``galore_adamw``), ``optim_target_modules``
    (default ``["attn", "mlp"]``), ``optim_args`` (``rank``, ``update_proj_gap``, ``scale``,
    ``proj_type``, plus ``solver``, ``stagger``), ``learning_rate``, ``weight_decay``, Adam betas
    and epsilon; layer-wise variants also ``gradient_accumulation_steps`` and ``max_grad_norm``.
    Keyword arguments override them. Defaults are transformers': rank 128, gap 200, scale 0.25,
    ``std``.
    """
    name = optimizer or _optim_name(args)
    if optimizer is None and name not in OPTIM_NAMES:
        name = "galore_adamw"
    if name not in OPTIM_NAMES:
        raise ValueError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIM_NAMES)})")
    layerwise = name.endswith(LAYERWISE_SUFFIX)
    base = name.removesuffix(LAYERWISE_SUFFIX)
    galore = {key: default for key, (_kind, default) in OPTIM_ARGS.items()}
    galore["proj_type"] = "std"
    galore.update(parse_optim_args(getattr(args, "optim_args", None)))
    explicit = {
        "rank": rank,
        "update_proj_gap": update_proj_gap,
        "scale": scale,
        "proj_type": proj_type,
    }
    galore.update({k: v for k, v in explicit.items() if v is not None})
    galore.update(galore_kwargs)
    targets = target_modules or getattr(args, "optim_target_modules", None) or ["attn", "mlp"]
    wd = float(getattr(args, "weight_decay", 0.0))
    groups = galore_param_groups(model, targets, weight_decay=wd, **galore)
    lr = float(args.learning_rate)
    cls: type[GaLoreOptimizer] = OPTIMIZERS[base]
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
    if layerwise:
        cls = _layerwise_class(cls)
        clip = getattr(args, "max_grad_norm", None)
        kwargs["accumulation_steps"] = int(getattr(args, "gradient_accumulation_steps", 1))
        kwargs["max_grad_norm"] = float(clip) if clip else None
    kwargs["params"] = groups  # Trainer pops "params" and uses it as the param groups
    return cls, kwargs


class GaLoreTrainer(transformers.Trainer):
    """``transformers.Trainer`` that builds this package's optimizer when ``args.optim`` is one
    of transformers' ``galore_*`` names (with ``optim_target_modules`` and ``optim_args`` read
    as transformers does, see :func:`galore_optimizer_cls_and_kwargs`); galore-torch is not
    needed. Any other ``optim``, or an explicit ``optimizers`` / ``optimizer_cls_and_kwargs``,
    behaves as in ``Trainer``."""

    def create_optimizer(self, model=None):
        if (
            self.optimizer is None
            and self.optimizer_cls_and_kwargs is None
            and _optim_name(self.args) in OPTIM_NAMES
        ):
            opt_model = self.model if model is None else model
            if opt_model is None:
                raise ValueError("GaLoreTrainer needs a model to build a GaLore optimizer")
            self.optimizer_cls_and_kwargs = galore_optimizer_cls_and_kwargs(opt_model, self.args)
        return super().create_optimizer(model)
