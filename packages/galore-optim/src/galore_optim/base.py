"""What every GaLore optimizer here shares: param-group keys and their validation, projector
state (plain tensors, ints and strings, so ``torch.load(weights_only=True)`` reads it), the
refresh schedule, DDP projector sync, the FSDP2 (DTensor) step, and a dtype-preserving
``load_state_dict``.

A param group is a GaLore group when it has a ``rank`` that is not ``None`` (galore-torch's rule);
every other group is optimized by the plain (full-rank) variant of the same optimizer.

GaLore group keys (galore-torch's first, then this package's):

=================  ==========  ================================================================
key                default     meaning
=================  ==========  ================================================================
rank               (required)  projection rank ``r``; must be ``<= min(m, n)`` of every param
update_proj_gap    200         refresh the basis every ``T`` steps (steps 0, T, 2T, ...)
scale              0.25        ``alpha``: the back-projected update is multiplied by it
proj_type          "std"       std / reverse_std / left / right / full
solver             "exact"     exact / randomized / warm (see :mod:`galore_optim.projector`)
oversample         8           randomized solvers: extra sketch columns
power_iters        2           randomized solvers: power iterations (warm uses one fewer)
stagger            False       spread refreshes of the group's matrices over the ``T`` steps
clamp_rank         False       clamp ``rank`` to ``min(m, n)`` instead of raising
seed               0           seeds the randomized solvers' sketches
sync_projectors    True        under torch.distributed, broadcast each new basis from rank 0
=================  ==========  ================================================================

Misspelled keys are refused (one ``ValueError`` line naming the key and the likely intended
one) instead of silently making a plain group. A key of any group that is not the optimizer's
(its defaults, ``params``, ``param_names``, ``initial_lr``) is refused when it *looks like* a
GaLore key: within optimal-string-alignment distance 2 of one (1 for the 4-letter ``rank`` and
``seed``; case-insensitive), or containing ``galore`` or ``proj``. GaLore keys in a group
without ``rank`` are refused too. Other extra keys (``name``, ``lr_scale``, ...) pass, as in
``torch.optim``.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.optim import Optimizer
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor
    from typing_extensions import TypeIs

from .projector import PROJ_TYPES, SOLVERS, compute_basis, project, resolve_side

GALORE_DEFAULTS: dict[str, Any] = {
    "update_proj_gap": 200,
    "scale": 0.25,
    "proj_type": "std",
    "solver": "exact",
    "oversample": 8,
    "power_iters": 2,
    "stagger": False,
    "clamp_rank": False,
    "seed": 0,
    "sync_projectors": True,
}

BACKENDS = (None, "auto", "reference", "triton")

GALORE_KEYS = ("rank", *GALORE_DEFAULTS)
# Keys torch.optim or its schedulers put in groups besides an optimizer's defaults.
_TORCH_GROUP_KEYS = ("params", "param_names", "initial_lr")


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def galore_lookalike(key: str) -> str | None:
    """The GaLore key ``key`` is probably a misspelling of (``"galore"`` for a key that merely
    mentions GaLore or projection), or ``None``."""
    low = key.lower()
    best = min(GALORE_KEYS, key=lambda k: _osa_distance(low, k))
    if _osa_distance(low, best) <= (1 if len(best) <= 4 else 2):
        return best
    if "galore" in low or "proj" in low:
        return "galore"
    return None


def is_galore_group(group: dict) -> bool:
    return group.get("rank") is not None


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_dtensor(t: torch.Tensor) -> TypeIs[DTensor]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(t, DTensor)


def _describe(t: torch.Tensor) -> str:
    return f"a DTensor with placements {tuple(t.placements)}" if _is_dtensor(t) else "a tensor"


# A step that refreshes bases shows a progress bar once it has taken this long (the first
# step of a large model on a CPU runs an exact SVD of every matrix: minutes).
REFRESH_PROGRESS_DELAY_S = 2.0


def _refresh_progress(total: int) -> tqdm:
    dist = torch.distributed
    other_rank = dist.is_available() and dist.is_initialized() and dist.get_rank() != 0
    return tqdm(
        total=total,
        desc="GaLore basis refresh",
        unit="matrix",
        delay=REFRESH_PROGRESS_DELAY_S,
        leave=False,
        disable=total < 2 or other_rank,
    )


class GaLoreOptimizer(Optimizer):
    """Base class: subclasses implement ``_update_param(p, group, grad)`` where ``grad`` is the
    projected gradient for GaLore params and the full gradient otherwise."""

    def __init__(self, params, defaults: dict, *, backend: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: choose from auto, reference, triton")
        self.backend = backend
        super().__init__(params, defaults)

    # -- groups -------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        gi = len(getattr(self, "param_groups", []))
        self._check_unknown_keys(group, gi)
        if is_galore_group(group):
            for key, value in GALORE_DEFAULTS.items():
                group.setdefault(key, value)
            self._validate_galore_keys(group, gi)
        super().add_param_group(group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.is_sparse:
                raise ValueError(f"param group {gi}: sparse parameters are not supported")
            if is_galore_group(group):
                self._validate_galore_param(p, group, gi)

    def _check_unknown_keys(self, group: dict, gi: int) -> None:
        known = {*self.defaults, *_TORCH_GROUP_KEYS, *GALORE_KEYS}
        for key in group:
            if not isinstance(key, str) or key in known:
                continue
            like = galore_lookalike(key)
            if like == "galore":
                raise ValueError(
                    f"param group {gi}: unknown key {key!r}; GaLore keys are "
                    f"{', '.join(GALORE_KEYS)}"
                )
            if like is not None:
                raise ValueError(
                    f"param group {gi}: unknown key {key!r} (did you mean {like!r}?); GaLore "
                    f"keys are {', '.join(GALORE_KEYS)}"
                )
        if not is_galore_group(group):
            stray = [k for k in GALORE_DEFAULTS if k in group]
            if stray:
                raise ValueError(
                    f"param group {gi} sets GaLore key(s) {', '.join(stray)} but no 'rank', so it "
                    f"would be a plain group; add 'rank' or remove them"
                )

    @staticmethod
    def _validate_galore_keys(group: dict, gi: int) -> None:
        where = f"GaLore param group {gi}"
        rank = group["rank"]
        if not _is_int(rank) or rank < 1:
            raise ValueError(f"{where}: rank must be a positive int, got {rank!r}")
        gap = group["update_proj_gap"]
        if not _is_int(gap) or gap < 1:
            raise ValueError(f"{where}: update_proj_gap must be a positive int, got {gap!r}")
        if not isinstance(group["scale"], numbers.Real) or isinstance(group["scale"], bool):
            raise ValueError(f"{where}: scale must be a number, got {group['scale']!r}")
        if group["proj_type"] not in PROJ_TYPES:
            raise ValueError(
                f"{where}: proj_type {group['proj_type']!r} is not one of {', '.join(PROJ_TYPES)}"
            )
        if group["solver"] not in SOLVERS:
            raise ValueError(
                f"{where}: solver {group['solver']!r} is not one of {', '.join(SOLVERS)}"
            )
        for key in ("oversample", "power_iters", "seed"):
            if not _is_int(group[key]) or group[key] < 0:
                raise ValueError(f"{where}: {key} must be a non-negative int, got {group[key]!r}")

    @staticmethod
    def _validate_galore_param(p: torch.Tensor, group: dict, gi: int) -> None:
        shape = tuple(p.shape)
        if p.dim() != 2:
            raise ValueError(
                f"GaLore param group {gi} holds a {p.dim()}-D parameter of shape {shape}: GaLore "
                f"projects 2-D weights only; put it in a group without 'rank'"
            )
        if group["rank"] > min(shape) and not group["clamp_rank"]:
            raise ValueError(
                f"GaLore param group {gi}: rank {group['rank']} exceeds min(m, n) = {min(shape)} "
                f"of a parameter of shape {shape}; lower the rank or set clamp_rank=True"
            )

    # -- checks -------------------------------------------------------------------------------
    def _checked_grad(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        grad = p.grad
        if grad is None:
            raise RuntimeError(
                f"{type(self).__name__}: parameter of shape {tuple(p.shape)} has no gradient"
            )
        if grad.is_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients (parameter of shape "
                f"{tuple(p.shape)}); use torch.optim.SparseAdam for sparse embeddings"
            )
        if grad.device != p.device:
            raise RuntimeError(
                f"{type(self).__name__}: gradient on {grad.device} but parameter of shape "
                f"{tuple(p.shape)} on {p.device}; keep each gradient on its parameter's device"
            )
        if grad.shape != p.shape:
            raise RuntimeError(
                f"gradient shape {tuple(grad.shape)} != parameter shape {tuple(p.shape)}"
            )
        if _is_dtensor(p) != _is_dtensor(grad) or (
            _is_dtensor(p) and _is_dtensor(grad) and tuple(grad.placements) != tuple(p.placements)
        ):
            raise RuntimeError(
                f"{type(self).__name__}: parameter of shape {tuple(p.shape)} is "
                f"{_describe(p)} but its gradient is {_describe(grad)}; a DTensor (FSDP2) "
                f"parameter needs a DTensor gradient with the same placements"
            )
        for key, value in self.state[p].items():
            if isinstance(value, torch.Tensor) and value.device != p.device:
                raise RuntimeError(
                    f"{type(self).__name__}: optimizer state {key!r} is on {value.device} but its "
                    f"parameter of shape {tuple(p.shape)} is on {p.device}; reload the state after "
                    f"moving the model, or move both together"
                )
        return grad

    # -- projection ---------------------------------------------------------------------------
    def _galore_index(self) -> dict[int, tuple[int, int]]:
        """``id(p) -> (ordinal among GaLore params, count)``: seeds and stagger offsets."""
        ids = [id(p) for g in self.param_groups if is_galore_group(g) for p in g["params"]]
        return {pid: (k, len(ids)) for k, pid in enumerate(ids)}

    def _init_galore_state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if "side" not in state:
            k, count = self._galore_index()[id(p)]
            gap = group["update_proj_gap"]
            state.setdefault("step", 0)
            state["side"] = resolve_side(group["proj_type"], tuple(p.shape))
            state["rank"] = min(group["rank"], min(p.shape))
            state["index"] = k
            state["refresh_offset"] = (k * gap) // count if group["stagger"] else 0
            state["last_refresh"] = -1
        return state

    def refresh_due(self, p: torch.Tensor, group: dict) -> bool:
        """Whether the next projection of ``p`` recomputes its basis."""
        state = self._init_galore_state(p, group)
        if "proj_left" not in state and "proj_right" not in state:
            return True
        return (state["step"] + state["refresh_offset"]) % group["update_proj_gap"] == 0

    def _refresh(self, p: torch.Tensor, group: dict, grad: torch.Tensor) -> None:
        state = self.state[p]
        left, right = compute_basis(
            grad,
            state["rank"],
            state["side"],
            solver=group["solver"],
            oversample=group["oversample"],
            power_iters=group["power_iters"],
            seed=group["seed"],
            index=state["index"],
            step=state["step"],
            prev_left=state.get("proj_left"),
            prev_right=state.get("proj_right"),
        )
        dist = torch.distributed
        if (
            group["sync_projectors"]
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            for t in (left, right):
                if t is not None:  # collectives need contiguous buffers; the basis may be
                    buf = t.contiguous()  # column-major (the exact solver keeps LAPACK's order)
                    dist.broadcast(buf, src=0)
                    if buf is not t:
                        t.copy_(buf)
        for key, t in (("proj_left", left), ("proj_right", right)):
            if t is not None:
                state[key] = t
        state["last_refresh"] = state["step"]

    def project_grad(self, p: torch.Tensor, group: dict, grad: torch.Tensor) -> torch.Tensor:
        """The gradient the optimizer's moments see: projected (refreshing the basis when due)
        for GaLore params, ``grad`` itself otherwise."""
        if not is_galore_group(group):
            return grad
        state = self._init_galore_state(p, group)
        if self.refresh_due(p, group):
            self._refresh(p, group, grad)
        return project(grad, state["side"], state.get("proj_left"), state.get("proj_right"))

    def _backend_for(self, *tensors: torch.Tensor | None) -> str | None:
        if self.backend in (None, "auto") and not all(
            t.is_contiguous() for t in tensors if t is not None
        ):
            return "reference"
        return self.backend

    # -- the step -----------------------------------------------------------------------------
    # Whether the plain (non-GaLore) update is elementwise, so a DTensor shard can be updated
    # from its local gradient shard alone (AdamW, 8-bit AdamW: yes; Adafactor: no).
    _elementwise_plain = True

    def _update_param(
        self, p: torch.Tensor, group: dict, grad: torch.Tensor, data: torch.Tensor | None = None
    ) -> None:
        """Update ``data`` (``p.data`` when ``None``) with ``grad``, using ``self.state[p]``."""
        raise NotImplementedError

    def _step_param(self, p: torch.Tensor, group: dict, grad: torch.Tensor) -> None:
        """One parameter's update. DTensor (FSDP2) parameters: GaLore params (and, for
        optimizers whose plain update is not elementwise, every param) gather the full gradient
        and weight, compute the projection and update redundantly on every rank, and write back
        only the local shard; plain params of elementwise optimizers update the local shard
        from the local gradient shard."""
        if not (_is_dtensor(p) and _is_dtensor(grad)):  # _checked_grad: both or neither
            self._update_param(p, group, self.project_grad(p, group, grad))
            return
        local = p.to_local()
        if not is_galore_group(group) and self._elementwise_plain:
            self._update_param(p, group, grad.to_local(), data=local)
            return
        from torch.distributed.tensor import distribute_tensor

        full = cast("DTensor", p.data).full_tensor()  # .data of a DTensor is a DTensor
        self._update_param(p, group, self.project_grad(p, group, grad.full_tensor()), data=full)
        shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
        local.copy_(shard.to_local())

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = [(p, g) for g in self.param_groups for p in g["params"] if p.grad is not None]
        refreshing = {id(p) for p, g in todo if is_galore_group(g) and self.refresh_due(p, g)}
        with _refresh_progress(len(refreshing)) as bar:
            for p, group in todo:
                self._step_param(p, group, self._checked_grad(p, group))
                if id(p) in refreshing:
                    bar.update(1)
        return loss

    # -- checkpoints --------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """Like ``Optimizer.load_state_dict`` but restores every state value as saved: torch casts
        floating state to the parameter dtype (which would round fp32 scales and turn 8-bit
        codes into floats) and turns string values into generators. Tensors move to their
        parameter's device, keeping their dtype."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        by_index = {}
        for group in self.param_groups:
            for p in group["params"]:
                by_index[len(by_index)] = p
        names = [n for g in state_dict["param_groups"] for n in g.get("param_names", [])]
        for key, st in saved.items():
            p = by_index[key] if isinstance(key, int) else by_index[names.index(key)]
            self.state[p] = {
                k: v.to(device=p.device, copy=True)
                if isinstance(v, torch.Tensor)
                else copy.deepcopy(v)
                for k, v in st.items()
            }
