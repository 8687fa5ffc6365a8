"""Compression policies: FastGen and the classic baselines, all expressed with ``rules``.

A policy turns the prompt's profile (attention probabilities of the last ``profile_window``
query rows, token classes, padding) into a ``Plan``: the kept set of every (row, KV head), the
starting scores, and the per-segment parameters the cache applies at every decoding step.

FastGen (Ge et al., ICLR 2024), adapted to grouped-query attention: every KV head gets one
policy, judged over all the query heads that share it. For each rung of the ladder (default:
special -> +punct -> +frequent -> +local -> full), the candidate kept set is built with the
shared rule (frequent = heavy hitters by attention summed over the profiled rows and the
group's query heads, budget ``frequent_ratio * prompt``; local = the last ``local_ratio *
prompt`` tokens). Its *recovery* for query head g is the kept attention mass averaged over the
profiled rows, ``mean_r sum_{j kept for r} A[g, r, j]``, where the local window slides with the
row r (a decoding query keeps its own recent tokens) and the other parts are the kept set at the
end of the prompt; the KV head's recovery is the minimum over its
query heads (``group_reduce="mean"`` averages instead). The cheapest rung whose recovery
reaches ``T`` wins; ``full`` always qualifies. Renormalising a row that keeps mass m gives an L1
distance of ``2 (1 - m)`` from the full row, so the paper's ``|A - A_C| <= 1 - T`` is the same
test at a threshold of ``(1 + T) / 2`` on kept mass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

from .rules import UNBOUNDED, budgets, make_params, prefill_parts

COMPONENTS = ("special", "punct", "frequent", "local", "full")
PAPER_LADDER = (
    ("special",),
    ("special", "punct"),
    ("special", "punct", "frequent"),
    ("special", "punct", "frequent", "local"),
    ("full",),
)


@dataclass
class Profile:
    """What a policy sees of one layer's prompt. ``B`` rows, ``H`` KV heads, ``G`` query heads
    per KV head, ``R`` profiled rows (the last ones), ``n`` prompt tokens (padding included)."""

    attn: torch.Tensor  # [B, H, G, R, n] float32 probabilities; rows of padding are zero
    row_valid: torch.Tensor  # [B, R] bool
    real: torch.Tensor  # [B, n] bool: not padding
    pos: torch.Tensor  # [B, n] long: position among the row's real tokens (-1 on padding)
    cls: torch.Tensor  # [B, n] int8 token class (rules.CLS_*)
    n_real: torch.Tensor  # [B] long

    @property
    def shape(self) -> tuple[int, int]:
        return self.attn.shape[0], self.attn.shape[1]


@dataclass
class Plan:
    keep: torch.Tensor  # [B, H, n] bool
    score: torch.Tensor  # [B, H, n] float32 starting scores of the kept tokens
    params: dict[str, torch.Tensor]  # [B, H] long each (rules.PARAM_NAMES)
    policy: torch.Tensor  # [B, H] long index into names
    names: tuple[str, ...]
    recovery: torch.Tensor  # [B, H] float32 kept attention mass of the chosen set


def kept_mass(profile: Profile, keep: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """``[B, H, G]``: attention mass on the kept keys, averaged over the valid profiled rows.

    With ``params``, the local window slides with the query row (row r keeps the keys within
    ``window`` positions of itself, as a decoding query at r would), the rest of ``keep`` is
    fixed; without, ``keep`` ([B, H, n]) applies to every row as is.
    """
    if params is None:
        rows_keep = keep[:, :, None, :].float()  # [B, H, 1, n]
    else:
        r = profile.row_valid.shape[1]
        row_pos = profile.pos[:, -r:]  # [B, R]
        win = params["window"][:, :, None, None]  # [B, H, 1, 1]
        sliding = profile.pos[:, None, None, :] > row_pos[:, None, :, None] - win  # [B, H, R, n]
        rows_keep = (keep[:, :, None, :] | sliding).float()
    mass = (profile.attn * rows_keep[:, :, None]).sum(-1)  # [B, H, G, R]
    rows = profile.row_valid[:, None, None, :].float()
    return (mass * rows).sum(-1) / rows.sum(-1).clamp(min=1)


def heavy_scores(profile: Profile) -> torch.Tensor:
    """Cumulative attention of every key over the profiled rows and the group: ``[B, H, n]``."""
    return profile.attn.sum(dim=(2, 3))


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


class Policy:
    """Base class: ``plan(profile) -> Plan``; ``score_mode`` says how decoding updates scores
    ("cumulative": add each step's attention, "last": replace it, as TOVA does)."""

    score_mode: Literal["cumulative", "last"] = "cumulative"
    profile_window: int = 256

    def plan(self, profile: Profile) -> Plan:  # pragma: no cover - interface
        raise NotImplementedError

    def _single(self, profile: Profile, name: str, score: torch.Tensor, **params) -> Plan:
        b, h = profile.shape
        p = make_params((b, h), profile.attn.device, **params)
        static, window, frequent = prefill_parts(
            profile.cls, profile.pos, profile.real, profile.n_real, score, p
        )
        rec = kept_mass(profile, static | frequent, p).min(-1).values
        keep = static | window | frequent
        zeros = torch.zeros(b, h, dtype=torch.long, device=keep.device)
        return Plan(keep, score, p, zeros, (name,), rec)


def _row(t: torch.Tensor, h: int) -> torch.Tensor:
    return t.view(-1, 1).expand(-1, h)


@dataclass(frozen=True)
class FastGen(Policy):
    """FastGen's adaptive policy. ``recovery`` is the threshold T in (0, 1]."""

    recovery: float = 0.95
    ladder: tuple[tuple[str, ...], ...] = PAPER_LADDER
    frequent_ratio: float = 0.3
    local_ratio: float = 0.3
    # Profiled query rows (the last ones). Cost: B * n_heads * profile_window * n float32 per
    # layer during the prompt. On SmolLM2 a short window over-estimates recovery (the last rows
    # attend locally), so the default profiles up to 1024 rows.
    profile_window: int = 1024
    group_reduce: Literal["min", "mean"] = "min"
    # Rows the recovery test averages over: the last ``recovery_rows`` profiled rows (None: all
    # of them, as the paper). Heavy-hitter scores still sum every profiled row.
    recovery_rows: int | None = None
    sink_tokens: int = 1  # the first real token counts as special (the paper's "<s>")
    score_mode: Literal["cumulative", "last"] = "cumulative"
    names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self):
        t = self.recovery
        if not isinstance(t, (int, float)) or not (0.0 < float(t) <= 1.0):
            raise ValueError(f"FastGen recovery threshold T must be in (0, 1], got {t!r}")
        _check_ratio("frequent_ratio", self.frequent_ratio)
        _check_ratio("local_ratio", self.local_ratio)
        if not self.ladder:
            raise ValueError("FastGen ladder must name at least one policy")
        for rung in self.ladder:
            bad = [c for c in rung if c not in COMPONENTS]
            if bad or not rung:
                raise ValueError(
                    f"unknown FastGen policy components {bad} (choose from {COMPONENTS})"
                )
        if self.group_reduce not in ("min", "mean"):
            raise ValueError(f"group_reduce must be 'min' or 'mean', got {self.group_reduce!r}")
        if self.profile_window < 1:
            raise ValueError(f"profile_window must be >= 1, got {self.profile_window}")
        if self.recovery_rows is not None and self.recovery_rows < 1:
            raise ValueError(f"recovery_rows must be >= 1 or None, got {self.recovery_rows}")
        object.__setattr__(self, "names", tuple("+".join(r) for r in self.ladder))

    def rung_params(self, rung: tuple[str, ...], n_real: torch.Tensor, h: int) -> dict:
        b = n_real.shape[0]
        shape, dev = (b, h), n_real.device
        if "full" in rung:
            return make_params(shape, dev, window=UNBOUNDED)
        level = 2 if "punct" in rung else (1 if "special" in rung else 0)
        values = {"level": level, "n_sink": self.sink_tokens if "special" in rung else 0}
        if "frequent" in rung:
            values["k_f"] = _row(budgets(self.frequent_ratio, n_real), h)
        if "local" in rung:
            values["window"] = _row(budgets(self.local_ratio, n_real), h)
        return make_params(shape, dev, **values)

    def plan(self, profile: Profile) -> Plan:
        b, h = profile.shape
        score = heavy_scores(profile)
        chosen = torch.full((b, h), -1, dtype=torch.long, device=score.device)
        keep = torch.zeros_like(profile.real.unsqueeze(1).expand(b, h, -1))
        recovery = torch.zeros(b, h, device=score.device)
        params = make_params((b, h), score.device)
        judged = profile
        if self.recovery_rows is not None and self.recovery_rows < profile.row_valid.shape[1]:
            r = self.recovery_rows
            judged = replace(
                profile, attn=profile.attn[..., -r:, :], row_valid=profile.row_valid[:, -r:]
            )
        for i, rung in enumerate(self.ladder):
            p = self.rung_params(rung, profile.n_real, h)
            static, window, frequent = prefill_parts(
                profile.cls, profile.pos, profile.real, profile.n_real, score, p
            )
            k = static | window | frequent
            mass = kept_mass(judged, static | frequent, p)
            rec = mass.min(-1).values if self.group_reduce == "min" else mass.mean(-1)
            ok = rec >= self.recovery
            if "full" in rung:
                ok = torch.ones_like(ok)
            take = ok & (chosen < 0)
            if i == len(self.ladder) - 1:  # nothing passed: the last rung
                take = chosen < 0
            chosen = torch.where(take, i, chosen)
            keep = torch.where(take.unsqueeze(-1), k, keep)
            recovery = torch.where(take, rec, recovery)
            for name in params:
                params[name] = torch.where(take, p[name], params[name])
        return Plan(keep, score, params, chosen, self.names, recovery)


@dataclass(frozen=True)
class Full(Policy):
    """Keep everything (the reference point; exercises the ragged path without pruning)."""

    profile_window: int = 16

    def plan(self, profile: Profile) -> Plan:
        return self._single(profile, "full", heavy_scores(profile), window=UNBOUNDED)


def _check_fraction(f: float) -> None:
    if not 0.0 < f <= 1.0:
        raise ValueError(f"kept_fraction must be in (0, 1], got {f!r}")


@dataclass(frozen=True)
class StreamingLLM(Policy):
    """Attention sinks + a sliding window; ``kept_fraction`` of the prompt in total."""

    kept_fraction: float = 0.5
    sinks: int = 4
    profile_window: int = 16

    def __post_init__(self):
        _check_fraction(self.kept_fraction)

    def plan(self, profile: Profile) -> Plan:
        _b, h = profile.shape
        total = _row(budgets(self.kept_fraction, profile.n_real), h)
        sinks = total.clamp(max=self.sinks)
        return self._single(
            profile, "streaming", heavy_scores(profile), n_sink=sinks, window=total - sinks
        )


@dataclass(frozen=True)
class H2O(Policy):
    """Heavy hitters (cumulative attention) + recent tokens, half each of the budget.

    Scores start from the profiled rows (H2O itself sums all prompt rows; a window keeps the
    prefill on SDPA)."""

    kept_fraction: float = 0.5
    recent_share: float = 0.5
    profile_window: int = 1024

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_ratio("recent_share", self.recent_share)

    def plan(self, profile: Profile) -> Plan:
        _b, h = profile.shape
        total = _row(budgets(self.kept_fraction, profile.n_real), h)
        window = torch.floor(total.double() * self.recent_share).long()
        return self._single(
            profile, "h2o", heavy_scores(profile), window=window, k_f=total - window
        )


@dataclass(frozen=True)
class TOVA(Policy):
    """Token Omission Via Attention: keep the tokens the *current* query attends to most
    (scores are replaced, not accumulated, each step); group-summed over query heads."""

    kept_fraction: float = 0.5
    profile_window: int = 1
    score_mode: Literal["cumulative", "last"] = "last"

    def __post_init__(self):
        _check_fraction(self.kept_fraction)

    def plan(self, profile: Profile) -> Plan:
        _b, h = profile.shape
        total = _row(budgets(self.kept_fraction, profile.n_real), h)
        last = profile.attn[:, :, :, -1, :].sum(2)  # the last prompt row's attention
        return self._single(profile, "tova", last, k_f=total)


@dataclass(frozen=True)
class SnapKV(Policy):
    """SnapKV: the last ``window`` prompt queries vote (pooled over ``kernel`` neighbouring
    keys) for the prefix tokens to keep; the observation window and all generated tokens are
    kept (no compression while decoding)."""

    kept_fraction: float = 0.5
    window: int = 64
    kernel: int = 5
    pooling: Literal["max", "avg"] = "max"

    def __post_init__(self):
        _check_fraction(self.kept_fraction)

    @property
    def profile_window(self) -> int:  # type: ignore[override]
        return self.window

    def plan(self, profile: Profile) -> Plan:
        b, h = profile.shape
        n_real = profile.n_real
        total = _row(budgets(self.kept_fraction, n_real), h)
        obs = torch.minimum(_row(n_real, h), torch.full_like(total, self.window)).clamp(max=total)
        votes = heavy_scores(profile)  # [B, H, n]
        if self.kernel > 1:
            pad = self.kernel // 2
            flat = votes.reshape(b * h, 1, -1)
            pool = F.max_pool1d if self.pooling == "max" else F.avg_pool1d
            votes = pool(flat, self.kernel, stride=1, padding=pad).reshape(b, h, -1)
        keep_from = _row(n_real, h) - obs
        return self._single(profile, "snapkv", votes, keep_from=keep_from, k_f=total - obs)


__all__ = [
    "COMPONENTS",
    "H2O",
    "PAPER_LADDER",
    "TOVA",
    "FastGen",
    "Full",
    "Plan",
    "Policy",
    "Profile",
    "SnapKV",
    "StreamingLLM",
    "heavy_scores",
    "kept_mass",
]
