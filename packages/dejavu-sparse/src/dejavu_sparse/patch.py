"""``sparsify(model, mode=..., sparsity=...)``: patch a Llama-family model in place.

Each decoder layer's ``mlp`` and ``self_attn`` get a forward that runs the chosen mode's sparse
path on decode steps (one token per row; batches of any size, served from the union of the
rows' selections) and the module's own dense forward otherwise, so ``generate`` works unchanged.
Sparsity 0 leaves every layer on its own dense forward: logits are bit-identical to the model's.
The weights are also kept in the layouts the gathered ops read (selected rows contiguous), on
the model's device at the time of the call: call ``sparsify`` after moving the model.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .arch import decoder_layers
from .calibration import Calibration
from .errors import DejaVuSparseError
from .layers import LayerState, Stats, Taps, attention_forward, mlp_forward

MODES = ("dejavu", "teal", "cats")
_ATTR = "_dejavu_sparse"


@dataclass
class SparseModel:
    """What ``sparsify`` installed on a model (``model._dejavu_sparse``)."""

    mode: str
    sparsity: float
    attn_sparsity: float
    states: list[LayerState]
    hooks: list = field(default_factory=list)

    def report(self) -> dict:
        """Achieved sparsity: the fraction of weight reads skipped per layer (MLP, attention and
        both), over every token processed sparsely since the last ``reset_stats``."""
        per_layer = [s.stats.summary() for s in self.states]
        mean = {k: sum(r[k] for r in per_layer) / len(per_layer) for k in ("mlp", "attn", "layer")}
        return {"mode": self.mode, "sparsity": self.sparsity, "layers": per_layer, "mean": mean}

    def reset_stats(self) -> None:
        for s in self.states:
            s.stats = Stats()

    def set_prefill(self, on: bool) -> None:
        """Sparsify multi-token forwards too (as masks: for quality evaluation)."""
        for s in self.states:
            s.prefill = on


def _check_sparsity(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DejaVuSparseError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if math.isnan(v) or not 0.0 <= v < 1.0:
        raise DejaVuSparseError(f"{name} must be in [0, 1), got {value!r}")
    return v


def _tap_hooks(layers, taps: Taps) -> list:
    handles = []
    for i, layer in enumerate(layers):

        def attn_in(module, args, kwargs, i=i):
            taps.attn_in[i] = args[0] if args else kwargs["hidden_states"]

        def mlp_in(module, args, i=i):
            taps.mlp_in[i] = args[0]

        handles.append(layer.register_forward_pre_hook(attn_in, with_kwargs=True))
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(mlp_in))
    return handles


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.detach().t().contiguous()


def _fusable(teal: dict[str, float], names: tuple[str, ...]) -> bool:
    """Projections of one input with one positive threshold: one gathered product serves all."""
    ts = {teal.get(p, 0.0) for p in names}
    return len(ts) == 1 and ts.pop() > 0


def _layouts(
    mode: str, attn: Any, mlp: Any, teal: dict[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Copies of the weights with the rows a mode selects contiguous (TEAL: q/k/v and gate/up
    concatenated where they share a threshold, so one selection and one product serve them)."""
    w: dict[str, torch.Tensor] = {}
    if mode in ("dejavu", "cats"):
        w["down_t"] = _t(mlp.down_proj.weight)
    if mode == "dejavu":
        g, u = mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()
        w["gate_up"] = torch.stack((g, u), 1).reshape(-1, g.shape[1])  # rows g0, u0, g1, u1, ...
        if mlp.gate_proj.bias is not None:
            w["gate_up_bias"] = torch.stack((mlp.gate_proj.bias, mlp.up_proj.bias), 1).reshape(-1)
        w["o_t"] = _t(attn.o_proj.weight)
    if mode == "teal":
        teal = teal or {}
        for names, module, fused in (
            (("q", "k", "v"), attn, "qkv_t"),
            (("gate", "up"), mlp, "gate_up_t"),
        ):
            weights = [getattr(module, f"{p}_proj").weight.detach() for p in names]
            if _fusable(teal, names):
                w[fused] = torch.cat(weights).t().contiguous()
            else:
                w.update({f"{p}_t": _t(wp) for p, wp in zip(names, weights, strict=True)})
        w["o_t"] = _t(attn.o_proj.weight)
        w["down_t"] = _t(mlp.down_proj.weight)
    return w


def sparsify(
    model: Any,
    mode: str = "dejavu",
    sparsity: float = 0.5,
    calibration: Calibration | str | os.PathLike | None = None,
    *,
    attn_sparsity: float | None = None,
    greedy: bool = True,
    block_size: int = 1,
    prefill: bool = False,
    track: bool = True,
) -> nn.Module:
    """Make ``model`` skip work on decode steps; returns the same (patched) model.

    ``mode``: ``"dejavu"`` (predicted MLP neurons and attention heads; ``sparsity`` is the
    fraction of neurons skipped, ``attn_sparsity`` of heads, default the same), ``"teal"``
    (thresholds on the input of every linear layer; ``sparsity`` is the size-weighted fraction
    of each layer's input channels skipped, allocated per projection by TEAL's greedy search
    unless ``greedy=False``; ``block_size`` > 1: input channels are kept or skipped in whole
    blocks of that many consecutive channels, by the block's RMS against a calibrated threshold,
    so every weight read on the CPU is one contiguous slab (faster per skipped row, at some
    quality cost at equal sparsity; one of the calibration's ``teal_block_sizes``, 8/16/32/64)),
    ``"cats"`` (a threshold on the SiLU gate; ``sparsity`` is the
    fraction of MLP neurons skipped). ``calibration``: a :class:`Calibration` or its directory
    (from :func:`dejavu_sparse.calibrate` or ``dejavu-sparse calibrate``), checked against the
    model; not needed at sparsity 0. ``prefill``: also sparsify multi-token forwards (computed
    with masks; that is how quality is evaluated). ``track``: count achieved sparsity.
    """
    if mode not in MODES:
        raise DejaVuSparseError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    s = _check_sparsity("sparsity", sparsity)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise DejaVuSparseError(f"block_size must be a positive integer, got {block_size!r}")
    if block_size > 1 and mode != "teal":
        raise DejaVuSparseError(f"block_size applies to mode 'teal' only, not {mode!r}")
    sa = s if attn_sparsity is None else _check_sparsity("attn_sparsity", attn_sparsity)
    layers = decoder_layers(model)
    if isinstance(calibration, (str, os.PathLike)):
        calibration = Calibration.load(calibration, model)
    elif calibration is not None:
        calibration.check_model(model)
    needs = s > 0 or (mode == "dejavu" and sa > 0)
    if needs and calibration is None:
        raise DejaVuSparseError(
            f"mode {mode!r} at sparsity {s} needs a calibration (calibrate first)"
        )
    if mode == "dejavu" and needs and calibration is not None and not calibration.has_predictors():
        raise DejaVuSparseError("calibration has no Deja Vu predictors")
    unsparsify(model)
    taps = Taps()
    states = []
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        state = LayerState(i, mode, taps, Stats(), prefill=prefill, track=track)
        dtype, device = mlp.down_proj.weight.dtype, mlp.down_proj.weight.device
        if needs and calibration is not None:
            if mode == "dejavu":
                inter = mlp.gate_proj.out_features
                heads = attn.q_proj.out_features // attn.head_dim
                state.mlp_k = min(inter, max(1, round((1 - s) * inter)))
                state.head_k = min(heads, max(1, round((1 - sa) * heads)))
                md, mu = calibration.predictor("mlp", i)
                hd, hu = calibration.predictor("heads", i)
                state.mlp_pred = (md.to(device, dtype), mu.to(device, dtype))
                state.lookahead = bool(calibration.manifest.get("lookahead", True))
                state.head_pred = (hd.to(device, dtype), hu.to(device, dtype))
            elif mode == "teal":
                state.teal = calibration.teal_thresholds(i, s, greedy, block_size)
                state.block = block_size
            else:
                state.cats_t = calibration.threshold("cats.gate", i, s)
            state.w = _layouts(mode, attn, mlp, state.teal)
        mlp.forward = functools.partial(mlp_forward, mlp, state)
        attn.forward = functools.partial(attention_forward, attn, state)
        states.append(state)
    handle = SparseModel(mode, s, sa, states)
    if mode == "dejavu" and needs:
        handle.hooks = _tap_hooks(layers, taps)
    setattr(model, _ATTR, handle)
    return model


def unsparsify(model: Any) -> nn.Module:
    """Remove what ``sparsify`` installed (no-op on a model it never patched)."""
    handle = getattr(model, _ATTR, None)
    if handle is None:
        return model
    for h in handle.hooks:
        h.remove()
    for layer in decoder_layers(model):
        for module in (layer.self_attn, layer.mlp):
            module.__dict__.pop("forward", None)
    delattr(model, _ATTR)
    return model


def sparse_state(model: Any) -> SparseModel:
    """The :class:`SparseModel` of a patched model (one-line error if it is not patched)."""
    handle = getattr(model, _ATTR, None)
    if handle is None:
        raise DejaVuSparseError("model is not sparsified (call dejavu_sparse.sparsify first)")
    return handle
