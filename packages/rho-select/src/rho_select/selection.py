"""Which tokens train: ranking by excess loss (current loss minus reference loss).

Modes:

- ``"batch"`` (the paper's): the top ``k`` of all labelled tokens of the batch by excess loss.
  Under ``torch.distributed`` (an initialized default group, or ``group=``, with more than one
  rank) the batch is the *global* batch: every rank all-gathers the excess losses and selects
  exactly what one process holding the whole batch (rank 0's tokens first, then rank 1's, ...)
  would select.
- ``"sequence"``: the top ``k`` of each sequence (row of a ``[batch, seq]`` input) separately.
- ``"threshold"``: every labelled token whose excess loss is greater than ``threshold``.
- ``"random"``: ``k`` labelled tokens drawn uniformly at random, global like ``"batch"`` (the
  control for "does selection help?").

**Count rule.** Of ``n`` labelled tokens (labels not equal to ``ignore_index``; ``-100``
padding and prompt masks never count and are never selected), ``k = max(1, floor(ratio * n +
1/2))`` are selected: the integer nearest ``ratio * n`` (halves round up, computed in float64),
at least one; ``k = 0`` when ``n = 0``. ``ratio = 1`` selects every labelled token.
:func:`selected_count` is the rule.

**Ties** break deterministically: among equal excess losses the token that comes first in the
(global) batch, in row-major order, wins. Selection is therefore invariant to reordering the
batch up to which of several exactly equal scores is taken.

Everything here is tensor code without data-dependent shapes or host syncs, so it traces under
``torch.compile(fullgraph=True)`` (single process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import RhoSelectError

MODES = ("batch", "sequence", "threshold", "random")
GLOBAL_MODES = ("batch", "random")


def selected_count(n_valid: int, ratio: float) -> int:
    """How many of ``n_valid`` labelled tokens a top-``ratio`` selection keeps (see module doc)."""
    if n_valid <= 0:
        return 0
    return max(1, math.floor(ratio * n_valid + 0.5))


def _count(n_valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """:func:`selected_count` on a tensor of counts (float64, so it equals the Python rule)."""
    k = torch.floor(n_valid.to(torch.float64) * ratio + 0.5).clamp(min=1)
    return torch.where(n_valid > 0, k, torch.zeros_like(k)).to(torch.int64)


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not (0.0 < ratio <= 1.0):  # also rejects NaN
        raise RhoSelectError(f"ratio must be in (0, 1], got {ratio}")
    return ratio


@dataclass(frozen=True)
class Selection:
    """A selection: ``mask`` (bool, the input's shape), ``selected`` and ``labelled`` (0-d int64
    counts over the batch the selection was made in: the global batch for a distributed
    ``"batch"``/``"random"`` selection, else the local one), and ``world_size`` (ranks that
    took part; 1 when local)."""

    mask: torch.Tensor
    selected: torch.Tensor
    labelled: torch.Tensor
    world_size: int = 1


def _top_k_mask(key: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Along the last dim: ``valid`` entries whose rank by ``key`` (descending, ties to the lower
    index) is below ``k`` (broadcast over leading dims)."""
    key = torch.where(valid, key, torch.full_like(key, -math.inf))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    positions = torch.arange(key.shape[-1], device=key.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return (rank < k) & valid


def _distributed_group(group, global_batch: bool, mode: str):
    """The process group a global selection runs over, or ``None`` for a local selection."""
    if not global_batch or mode not in GLOBAL_MODES:
        return None
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size(group) <= 1:
        return None
    return group if group is not None else torch.distributed.group.WORLD


def _all_gather_flat(x: torch.Tensor, group) -> list[torch.Tensor]:
    """Every rank's 1-d ``x`` (sizes may differ), in rank order."""
    dist = torch.distributed
    world = dist.get_world_size(group)
    size = torch.tensor([x.numel()], device=x.device, dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(counts), dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return [g[:c] for g, c in zip(gathered, counts, strict=True)]


def select_tokens(
    excess: torch.Tensor,
    valid: torch.Tensor,
    ratio: float = 0.6,
    *,
    mode: str = "batch",
    threshold: float | None = None,
    group=None,
    global_batch: bool = True,
    generator: torch.Generator | None = None,
) -> Selection:
    """Select tokens to train on from their excess losses.

    ``excess``: float tensor of excess losses (current minus reference), any shape (``[batch,
    seq]`` for ``mode="sequence"``). ``valid``: bool tensor of the same shape, True for labelled
    tokens. ``ratio`` in (0, 1] for the top-k modes; ``threshold`` for ``mode="threshold"``.
    ``group``/``global_batch``: see the module doc (global selection is for ``"batch"`` and
    ``"random"`` only). ``generator`` seeds ``"random"``.
    """
    if mode not in MODES:
        raise RhoSelectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if excess.shape != valid.shape:
        raise RhoSelectError(
            f"excess losses of shape {tuple(excess.shape)} and labels of shape "
            f"{tuple(valid.shape)} disagree"
        )
    valid = valid.bool()
    if mode == "threshold":
        if threshold is None or not math.isfinite(threshold):
            raise RhoSelectError(f"mode='threshold' needs a finite threshold, got {threshold}")
        mask = valid & (excess > threshold)
        return Selection(mask, mask.sum(), valid.sum())
    ratio = check_ratio(ratio)
    if mode == "sequence":
        if excess.dim() < 2:
            raise RhoSelectError(
                f"mode='sequence' needs [batch, seq] inputs, got shape {tuple(excess.shape)}"
            )
        k = _count(valid.sum(-1, keepdim=True), ratio)
        mask = _top_k_mask(excess.float(), valid, k)
        return Selection(mask, mask.sum(), valid.sum())
    if mode == "random":
        key = torch.rand(excess.shape, generator=generator, device="cpu").to(excess.device)
    else:
        key = excess.float()
    group = _distributed_group(group, global_batch, mode)
    if group is None:
        k = _count(valid.sum(), ratio)
        mask = _top_k_mask(key.reshape(-1), valid.reshape(-1), k).view(valid.shape)
        return Selection(mask, k, valid.sum())
    return _select_global(key, valid, ratio, group)


def _select_global(key: torch.Tensor, valid: torch.Tensor, ratio: float, group) -> Selection:
    """Top-k over the concatenation of every rank's tokens; this rank's part of the mask."""
    dist = torch.distributed
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    keys = _all_gather_flat(key.reshape(-1).float(), group)
    valids = _all_gather_flat(valid.reshape(-1).to(torch.uint8), group)
    all_key, all_valid = torch.cat(keys), torch.cat(valids).bool()
    k = _count(all_valid.sum(), ratio)
    mask = _top_k_mask(all_key, all_valid, k)
    start = sum(x.numel() for x in keys[:rank])
    local = mask[start : start + key.numel()].view(valid.shape)
    return Selection(local, k, all_valid.sum(), world)
