"""Sharded checkpoints of FSDP2 runs with ``torch.distributed.checkpoint`` (DCP).

    from galore_optim.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint("ckpt/step-1000", model, optimizer)   # every rank calls it
    ...
    load_checkpoint("ckpt/step-1000", model, optimizer)   # fresh model + optimizer, same sharding

The optimizer's state is keyed by parameter name (its FQN in ``model``). Under FSDP2 the state of
a plain (non-GaLore) parameter of an elementwise optimizer (``GaLoreAdamW``, fp32 moments of
``GaLoreAdamW8bit``) is the local shard: it is saved as a DTensor with the parameter's mesh and
placements, so DCP writes each shard once. Replicated GaLore state (bases, low-rank moments,
Adafactor's gathered state) is a plain tensor, identical on every rank, saved once. 8-bit codes
and scales of plain parameters are per-rank blocks and are saved under per-rank keys, so a
checkpoint holding them loads only with the same world size and sharding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import GaLoreOptimizer, _is_dtensor, is_galore_group

_RANK_KEY = "{key}@rank{rank}"


def _named_params(model: nn.Module, optimizer: GaLoreOptimizer) -> list[tuple[str, torch.Tensor]]:
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError(
                    f"optimizer holds a parameter of shape {tuple(p.shape)} that is not in the model"
                )
            out.append((names[id(p)], p))
    return out


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _sharded_state(optimizer: GaLoreOptimizer, group: dict, p: torch.Tensor) -> bool:
    return _is_dtensor(p) and not is_galore_group(group) and optimizer._elementwise_plain


def optimizer_state_dict(model: nn.Module, optimizer: GaLoreOptimizer) -> dict[str, Any]:
    """The optimizer's state for ``dcp.save`` / ``dcp.load``: ``{"state": {fqn: {...}},
    "param_groups": [{..., "params": [fqn, ...]}]}`` with local-shard state as DTensors."""
    from torch.distributed.tensor import DTensor

    named = _named_params(model, optimizer)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    state: dict[str, dict[str, Any]] = {}
    for name, p in named:
        if p not in optimizer.state:
            continue
        entry: dict[str, Any] = {}
        sharded = _sharded_state(optimizer, group_of[id(p)], p)
        for key, value in optimizer.state[p].items():
            if sharded and isinstance(value, torch.Tensor) and isinstance(p, DTensor):
                if value.shape == p.to_local().shape:
                    entry[key] = DTensor.from_local(
                        value, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()
                    )
                else:
                    entry[_RANK_KEY.format(key=key, rank=_rank())] = value
            else:
                entry[key] = value
        state[name] = entry
    it = iter(named)
    groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [next(it)[0] for _ in g["params"]],
        }
        for g in optimizer.param_groups
    ]
    return {"state": state, "param_groups": groups}


def load_optimizer_state_dict(
    model: nn.Module, optimizer: GaLoreOptimizer, state_dict: dict[str, Any]
) -> None:
    """Load what :func:`optimizer_state_dict` produced (after ``dcp.load`` filled it)."""
    named = _named_params(model, optimizer)
    index = {name: k for k, (name, _p) in enumerate(named)}
    suffix = f"@rank{_rank()}"
    state: dict[int, dict[str, Any]] = {}
    for name, entry in state_dict["state"].items():
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if "@rank" in key:
                if not key.endswith(suffix):
                    continue
                key = key.removesuffix(suffix)
            if _is_dtensor(value):
                value = value.to_local()
            out[key] = value
        state[index[name]] = out
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state_dict["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


@torch.no_grad()
def _materialize_state(model: nn.Module, optimizer: GaLoreOptimizer) -> None:
    """Create every state entry (so ``dcp.load`` knows what to read) by one step on zero
    gradients, then put the parameters back as they were."""
    if optimizer.state:
        return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    saved = [p.detach().clone() for p in params]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, s, g in zip(params, saved, grads, strict=True):
        p.copy_(s)
        p.grad = g


def save_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: GaLoreOptimizer) -> None:
    """``dcp.save`` of the model (``get_model_state_dict``) and the optimizer; call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    dcp_save(
        {"model": get_model_state_dict(model), "optim": optimizer_state_dict(model, optimizer)},
        checkpoint_id=checkpoint_id,
    )


def load_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: GaLoreOptimizer) -> None:
    """``dcp.load`` into a model sharded as when saved and its freshly built optimizer."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    _materialize_state(model, optimizer)
    state = {"model": get_model_state_dict(model), "optim": optimizer_state_dict(model, optimizer)}
    dcp_load(state, checkpoint_id=checkpoint_id)
    set_model_state_dict(model, state["model"])
    load_optimizer_state_dict(model, optimizer, state["optim"])
