"""The keep/evict rule every policy shares, written once for prefill and for decoding.

Each (batch row, KV head) segment carries five integers (``SegmentParams``):

- ``level``: 0 nothing by class, 1 special tokens kept, 2 special and punctuation kept;
- ``n_sink``: the first ``n_sink`` positions are kept (attention sinks);
- ``keep_from``: positions ``>= keep_from`` are kept (SnapKV's observation window and everything
  generated after it);
- ``window``: the last ``window`` positions are kept (a sliding local window: FastGen's C_local,
  StreamingLLM, H2O's recent tokens);
- ``k_f``: at most ``k_f`` other tokens are kept, those with the highest score (FastGen's
  C_frequent, H2O's heavy hitters, SnapKV's selected prefix, TOVA);
- ``window_q``, ``k_f_q``: budgets that grow with the sequence, as fractions of the current
  length ``L`` (real tokens so far) in units of ``1 / FRACTION_ONE``. The window in force is
  ``max(window, window_q * L // FRACTION_ONE - n_sink)`` (sinks count in a grown window's
  budget), the heavy-hitter budget ``max(k_f, k_f_q * L // FRACTION_ONE - window - n_sink)``
  (``k_f_q`` is the share of window, sinks and heavy hitters together), so the absolute values
  act as floors (the minimum kept window) and a ``kept_fraction`` keeps meaning "this share of
  the sequence" while decoding, exactly.

A token is *protected* when one of the first four says so. At prefill the kept set is
``protected | top-k_f(other real tokens by score)``. While decoding, after each step's attention
has updated the scores, the lowest-scoring unprotected tokens are evicted one by one until at
most ``k_f`` remain (FastGen's Algorithm 2, H2O's greedy eviction). Ties go against the older
token. A step adds one token and moves the window by at most one; the heavy-hitter budget shrinks
(by one) only in a step where the window grows and so releases no token. Hence a step evicts
at most one token per segment: the decode step has a fixed amount of
work and needs no host synchronization. Positions are per row, counting real (non-padding) tokens from 0.
"""

from __future__ import annotations

import math

import torch

CLS_NORMAL = 0
CLS_PUNCT = 1
CLS_SPECIAL = 2
UNBOUNDED = 1 << 30  # "keep everything" for window / k_f / keep_from bounds
FRACTION_BITS = 20
FRACTION_ONE = 1 << FRACTION_BITS  # fixed-point unit of window_q / k_f_q (exact integer math)

PARAM_NAMES = ("level", "n_sink", "keep_from", "window", "k_f", "window_q", "k_f_q")


def fraction_q(ratio: float) -> int:
    """``ratio`` in fixed point (``FRACTION_ONE`` = 1), for ``window_q`` / ``k_f_q``. Rounded up,
    so a decimal fraction of a length lands on ``floor(ratio * length)`` (0.7 of 10 is 7, not 6)
    for any length below ~100k tokens."""
    return min(FRACTION_ONE, max(0, math.ceil(ratio * FRACTION_ONE - 1e-6)))


def window_at(params: dict, length):
    """The window in force when the sequence has ``length`` real tokens."""
    grown = ((params["window_q"] * length) >> FRACTION_BITS) - params["n_sink"]
    return _maximum(params["window"], grown)


def k_f_at(params: dict, length):
    """The heavy-hitter budget in force when the sequence has ``length`` real tokens: what
    ``k_f_q`` grants, less the window and the sinks (they count in the same budget)."""
    grown = (params["k_f_q"] * length) >> FRACTION_BITS
    grown = grown - window_at(params, length) - params["n_sink"]
    return _maximum(params["k_f"], grown)


def _maximum(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return max(a, b)


def budget(ratio: float, n: int) -> int:
    """Tokens granted by a fraction of a length, in the same fixed point as the rule's
    ``window_q`` / ``k_f_q`` (so a prompt's budget and its decoding budget agree exactly)."""
    return (fraction_q(ratio) * n) >> FRACTION_BITS


def budgets(ratio: float, n: torch.Tensor) -> torch.Tensor:
    """``budget`` elementwise over an integer tensor of lengths."""
    return (fraction_q(ratio) * n.long()) >> FRACTION_BITS


def protected(
    cls: torch.Tensor, pos: torch.Tensor, newest: torch.Tensor, params: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Which tokens the segment's rule keeps unconditionally (all arguments broadcast).

    ``newest`` is the position of the most recent token of the row.
    """
    return protected_static(cls, pos, params) | in_window(pos, newest, params)


def protected_static(cls: torch.Tensor, pos: torch.Tensor, params: dict[str, torch.Tensor]):
    """The protection that does not move with time: classes, sinks, ``keep_from``."""
    level = params["level"]
    keep = (level >= 1) & (cls == CLS_SPECIAL)
    keep |= (level >= 2) & (cls == CLS_PUNCT)
    keep |= pos < params["n_sink"]
    keep |= pos >= params["keep_from"]
    return keep


def in_window(pos: torch.Tensor, newest: torch.Tensor, params: dict[str, torch.Tensor]):
    """The sliding local window: the last ``window_at(newest + 1)`` positions up to ``newest``."""
    return pos > newest - window_at(params, newest + 1)


def top_k_keep(
    candidates: torch.Tensor, score: torch.Tensor, pos: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """Over the last dim: the ``k`` candidates with the highest score (ties: the newer wins).

    ``k`` broadcasts against ``candidates.shape[:-1]``.
    """
    n = candidates.shape[-1]
    if n == 0:
        return candidates.clone()
    key_score = torch.where(candidates, score.float(), torch.full_like(score.float(), -math.inf))
    # Order: score descending, then position descending (two stable sorts).
    by_pos = torch.argsort(pos.expand_as(key_score), dim=-1, descending=True, stable=True)
    s_sorted = torch.gather(key_score, -1, by_pos)
    by_score = torch.argsort(s_sorted, dim=-1, descending=True, stable=True)
    order = torch.gather(by_pos, -1, by_score)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(n, device=order.device).expand_as(order))
    return candidates & (rank < k.unsqueeze(-1))


def prefill_parts(
    cls: torch.Tensor,
    pos: torch.Tensor,
    real: torch.Tensor,
    n_real: torch.Tensor,
    score: torch.Tensor,
    params: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept set after the prompt in its three parts, each ``[B, H, n]``: ``static``
    (classes, sinks, keep_from), ``window`` (the last ``window`` tokens) and ``frequent``
    (top-``k_f`` of the remaining real tokens by score).

    ``cls``, ``pos``, ``real``: ``[B, n]``; ``n_real``: ``[B]``; ``score``: ``[B, H, n]``;
    ``params``: ``[B, H]`` each.
    """
    p = {k: v.unsqueeze(-1) for k, v in params.items()}
    newest = (n_real - 1).view(-1, 1, 1)
    real3 = real.unsqueeze(1)
    cls3, pos3 = cls.unsqueeze(1), pos.unsqueeze(1)
    static = protected_static(cls3, pos3, p) & real3
    window = in_window(pos3, newest, p) & real3
    cand = real3 & ~static & ~window
    k_f = k_f_at(params, n_real.view(-1, 1))
    return static, window, top_k_keep(cand, score, pos3, k_f)


def prefill_keep(cls, pos, real, n_real, score, params) -> torch.Tensor:
    """Kept set after the prompt, ``[B, H, n]`` (the union of ``prefill_parts``)."""
    static, window, frequent = prefill_parts(cls, pos, real, n_real, score, params)
    return static | window | frequent


def make_params(shape: tuple[int, ...], device, **values) -> dict[str, torch.Tensor]:
    """Segment parameters of ``shape`` from scalars or tensors (missing ones: keep nothing)."""
    defaults = {
        "level": 0,
        "n_sink": 0,
        "keep_from": UNBOUNDED,
        "window": 0,
        "k_f": 0,
        "window_q": 0,
        "k_f_q": 0,
    }
    out = {}
    for name in PARAM_NAMES:
        v = values.get(name, defaults[name])
        t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        out[name] = t.to(device=device, dtype=torch.long).expand(shape).clone()
    return out
