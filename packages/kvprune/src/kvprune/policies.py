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

Budgets. Every policy takes a target ``kept_fraction`` (FastGen: instead of ``recovery``; it
then picks, per layer, the highest threshold whose kept set fits). Fractions are of the current
sequence length, so the share kept stays the same while decoding (H2O/StreamingLLM/TOVA evict to
follow it); SnapKV and AdaptiveFastGen compress the prompt and keep every generated token, as
SnapKV does. Every policy keeps at least the last ``min_window`` tokens (default 16): a
one-token prompt would otherwise leave nothing but special tokens to attend to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

from .rules import UNBOUNDED, budgets, fraction_q, make_params, prefill_parts, window_at

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
    # Results policies may reuse when several plan the same profile (``cache.prefill_all``).
    shared: dict = field(default_factory=dict, repr=False, compare=False)

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


def kept_mass(
    profile: Profile,
    keep: torch.Tensor,
    params: dict | None = None,
    by_row: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, H, G]``: attention mass on the kept keys, averaged over the valid profiled rows.

    With ``params``, the local window slides with the query row (row r keeps the keys within
    the window in force at r, as a decoding query at r would), the rest of ``keep`` is fixed;
    without, ``keep`` ([B, H, n]) applies to every row as is. ``by_row``: optionally
    ``profile.attn.transpose(2, 3).contiguous()`` (``[B, H, R, G, n]``), the layout the
    product needs, when the caller tests several kept sets on one profile.
    """
    if params is None:
        rows_keep = keep[:, :, None, :].expand(-1, -1, profile.attn.shape[3], -1)
    else:
        r = profile.row_valid.shape[1]
        row_pos = profile.pos[:, -r:]  # [B, R]
        p = {k: v[:, :, None, None] for k, v in params.items()}  # [B, H, 1, 1]
        newest = row_pos[:, None, :, None]  # [B, 1, R, 1]
        sliding = profile.pos[:, None, None, :] > newest - window_at(p, newest + 1)
        rows_keep = keep[:, :, None, :] | sliding  # [B, H, R, n]
    # A dot product per (row, head, query row). einsum copies ``attn`` into [B, H, R, G, n]
    # order on every call; a caller that tests several kept sets passes that copy once.
    keep_f = rows_keep.to(profile.attn.dtype)
    if by_row is None:
        mass = torch.einsum("bhgrn,bhrn->bhgr", profile.attn, keep_f)
    else:
        mass = torch.einsum("bhrgn,bhrn->bhgr", by_row, keep_f)
    rows = profile.row_valid[:, None, None, :].float()
    return (mass * rows).sum(-1) / rows.sum(-1).clamp(min=1)


def heavy_scores(profile: Profile) -> torch.Tensor:
    """Cumulative attention of every key over the profiled rows and the group: ``[B, H, n]``."""
    return profile.attn.sum(dim=(2, 3))


def pooled_votes(profile: Profile, kernel: int, pooling: str = "max") -> torch.Tensor:
    """SnapKV's votes: attention of the profiled (observation) rows summed over the rows and
    the group, pooled over ``kernel`` neighbouring keys: ``[B, H, n]``."""
    votes = heavy_scores(profile)
    if kernel > 1:
        b, h, n = votes.shape
        pool = F.max_pool1d if pooling == "max" else F.avg_pool1d
        flat = votes.reshape(b * h, 1, n)
        votes = pool(flat, kernel, stride=1, padding=kernel // 2)[..., :n].reshape(b, h, n)
    return votes


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_fraction(f) -> None:
    if not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
        raise ValueError(f"kept_fraction must be in (0, 1], got {f!r}")


def _check_min_window(w) -> None:
    if not isinstance(w, int) or w < 0:
        raise ValueError(f"min_window must be an int >= 0, got {w!r}")


class Policy:
    """Base class: ``plan(profile) -> Plan``; ``score_mode`` says how decoding updates scores
    ("cumulative": add each step's attention, "last": replace it, as TOVA does).
    ``uses_token_classes``: whether the kept set depends on special/punctuation tokens (such a
    policy needs the tokenizer)."""

    score_mode: Literal["cumulative", "last"] = "cumulative"
    # Decoding scores averaged over every head of the layer, per position (``layer_mean_scores``)
    layer_scores: bool = False
    profile_window: int = 256
    uses_token_classes: bool = False
    min_window: int = 16

    def plan(self, profile: Profile) -> Plan:  # pragma: no cover - interface
        raise NotImplementedError

    def _single(self, profile: Profile, name: str, score: torch.Tensor, **params) -> Plan:
        b, h = profile.shape
        params.setdefault("window", self.min_window)
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
    """FastGen's adaptive policy (the paper's ladder and test). ``recovery`` is the threshold T
    in (0, 1]; with ``kept_fraction`` set instead, each layer uses the highest threshold whose
    kept set fits that share of the prompt (the ladder and the test are unchanged)."""

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
    kept_fraction: float | None = None
    min_window: int = 16
    names: tuple[str, ...] = field(init=False, default=())

    uses_token_classes = True

    def __post_init__(self):
        t = self.recovery
        if not isinstance(t, (int, float)) or not (0.0 < float(t) <= 1.0):
            raise ValueError(f"FastGen recovery threshold T must be in (0, 1], got {t!r}")
        if self.kept_fraction is not None:
            _check_fraction(self.kept_fraction)
        _check_min_window(self.min_window)
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
        """A rung's segment parameters. C_frequent keeps ``frequent_ratio`` of the current
        length (the paper's budget), C_local the last ``local_ratio`` of it."""
        b = n_real.shape[0]
        shape, dev = (b, h), n_real.device
        if "full" in rung:
            return make_params(shape, dev, window=UNBOUNDED)
        level = 2 if "punct" in rung else (1 if "special" in rung else 0)
        values: dict = {
            "level": level,
            "n_sink": self.sink_tokens if "special" in rung else 0,
            "window": self.min_window,
        }
        if "local" in rung:
            values["window_q"] = fraction_q(self.local_ratio)
        if "frequent" in rung:  # k_f_q is the share of frequent + window + sinks
            share = self.frequent_ratio + (self.local_ratio if "local" in rung else 0.0)
            values["k_f_q"] = fraction_q(share)
        return make_params(shape, dev, **values)

    def rungs(self, profile: Profile):
        """Every rung's kept set ``[B, H, n]``, parameters and recovery ``[B, H]`` (the same
        for every threshold and budget: shared between such policies on one profile)."""
        key = (
            "fastgen_rungs",
            self.ladder,
            self.frequent_ratio,
            self.local_ratio,
            self.group_reduce,
            self.recovery_rows,
            self.sink_tokens,
            self.min_window,
        )
        if key not in profile.shared:
            profile.shared[key] = self._rungs(profile)
        return profile.shared[key]

    def _rungs(self, profile: Profile):
        score = heavy_scores(profile)
        _b, h = profile.shape
        judged = profile
        if self.recovery_rows is not None and self.recovery_rows < profile.row_valid.shape[1]:
            r = self.recovery_rows
            judged = replace(
                profile, attn=profile.attn[..., -r:, :], row_valid=profile.row_valid[:, -r:]
            )
        out = []
        # Every rung's mass is a product with the same profile: reorder it once (a transient
        # copy of the profile, 3-5x faster over the ladder than einsum reordering per rung).
        by_row = judged.attn.transpose(2, 3).contiguous()
        for rung in self.ladder:
            p = self.rung_params(rung, profile.n_real, h)
            static, window, frequent = prefill_parts(
                profile.cls, profile.pos, profile.real, profile.n_real, score, p
            )
            mass = kept_mass(judged, static | frequent, p, by_row)
            rec = mass.min(-1).values if self.group_reduce == "min" else mass.mean(-1)
            if "full" in rung:
                rec = torch.ones_like(rec)
            out.append((static | window | frequent, p, rec))
        return score, out

    def threshold_for_budget(self, profile: Profile, rungs) -> torch.Tensor:
        """``[B]``: per batch row, the highest threshold whose chosen rungs keep at most
        ``kept_fraction`` of the layer's prompt entries (the lowest rungs if none fits)."""
        rec = torch.stack([r for _, _, r in rungs], -1)  # [B, H, R]
        cost = torch.stack([k.sum(-1) for k, _, _ in rungs], -1)  # [B, H, R]
        b, h, _ = rec.shape
        candidates = torch.cat([rec.reshape(b, -1), torch.zeros(b, 1, device=rec.device)], -1)
        ok = rec[:, None] >= candidates[:, :, None, None]  # [B, C, H, R]
        ok[..., -1] = True
        first = ok.float().argmax(-1)  # [B, C, H]
        total = torch.gather(cost[:, None].expand(-1, first.shape[1], -1, -1), -1, first[..., None])
        total = total.squeeze(-1).sum(-1)  # [B, C]
        assert self.kept_fraction is not None
        budget = budgets(self.kept_fraction, profile.n_real) * h  # [B]
        fits = total <= budget[:, None]
        best = torch.where(fits, candidates, torch.full_like(candidates, -1.0)).amax(-1)
        return torch.where(best < 0, torch.zeros_like(best), best)

    def plan(self, profile: Profile) -> Plan:
        b, h = profile.shape
        score, rungs = self.rungs(profile)
        if self.kept_fraction is None:
            threshold = torch.full((b, 1), float(self.recovery), device=score.device)
        else:
            threshold = self.threshold_for_budget(profile, rungs)[:, None]
        chosen = torch.full((b, h), -1, dtype=torch.long, device=score.device)
        keep = torch.zeros_like(profile.real.unsqueeze(1).expand(b, h, -1))
        recovery = torch.zeros(b, h, device=score.device)
        params = make_params((b, h), score.device)
        for i, (k, p, rec) in enumerate(rungs):
            take = (rec >= threshold) & (chosen < 0)
            if i == len(rungs) - 1:  # nothing passed: the last rung
                take = chosen < 0
            chosen = torch.where(take, i, chosen)
            keep = torch.where(take.unsqueeze(-1), k, keep)
            recovery = torch.where(take, rec, recovery)
            for name in params:
                params[name] = torch.where(take, p[name], params[name])
        return Plan(keep, score, params, chosen, self.names, recovery)


@dataclass(frozen=True)
class AdaptiveFastGen(Policy):
    """FastGen's per-head structure with SnapKV scores and an Ada-KV budget (an extension of
    the paper; the departures are documented in the README).

    Per (row, KV head), on the last ``window`` prompt rows (the observation window):

    1. *Structural rung* (FastGen): if special tokens + punctuation + the first token + the
       minimum window recover at least ``structural_recovery`` of those rows' attention, the
       head keeps only them (FastGen's cheapest rungs; it frees its share for other heads).
    2. Every other head keeps the special tokens, the first ``sinks`` tokens, the observation
       window and every generated token (SnapKV), plus heavy hitters ranked by SnapKV's pooled
       votes of the observation rows (not FastGen's attention accumulated over the prompt).
    3. *Budget* (Ada-KV): the layer's ``kept_fraction * prompt * heads`` entries, less what
       steps 1-2 protect, go to the heavy hitters of all heads together: each head gets a floor
       of ``alpha`` times an even share, the rest goes to the highest votes of any head.

    ``prompt_share`` > 0 ranks heavy hitters by a mixture instead: ``1 - prompt_share`` of each
    head's normalised observation votes plus ``prompt_share`` of its normalised attention
    accumulated over the last ``prompt_rows`` prompt rows (H2O's signal). The observation votes
    find what the end of the prompt asks for (a needle); the accumulated attention keeps
    passages the whole prompt leans on, which a continuation of the prompt may repeat.
    """

    kept_fraction: float = 0.5
    window: int = 32
    kernel: int = 7
    pooling: Literal["max", "avg"] = "max"
    alpha: float = 0.2
    structural_recovery: float = 0.98
    sinks: int = 4
    min_window: int = 16
    recent_share: float = 0.0
    prompt_share: float = 0.0
    prompt_rows: int = 1024
    names: tuple[str, ...] = ("structural", "adaptive")

    uses_token_classes = True

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_min_window(self.min_window)
        _check_ratio("alpha", self.alpha)
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"AdaptiveFastGen window must be an int >= 1, got {self.window!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel!r}")
        if not 0.0 < self.structural_recovery <= 1.0:
            raise ValueError(
                f"structural_recovery must be in (0, 1], got {self.structural_recovery!r}"
            )
        if self.sinks < 0:
            raise ValueError(f"sinks must be >= 0, got {self.sinks}")
        _check_ratio("recent_share", self.recent_share)
        _check_ratio("prompt_share", self.prompt_share)
        if not isinstance(self.prompt_rows, int) or self.prompt_rows < 1:
            raise ValueError(f"prompt_rows must be an int >= 1, got {self.prompt_rows!r}")

    @property
    def profile_window(self) -> int:  # type: ignore[override]
        if self.prompt_share > 0:
            return max(self.window, self.prompt_rows)
        return self.window

    def plan(self, profile: Profile) -> Plan:
        b, h = profile.shape
        dev = profile.attn.device
        n_real = profile.n_real
        whole = profile
        profile = last_rows(profile, self.window)  # the observation window
        votes = pooled_votes(profile, self.kernel, self.pooling)
        if self.prompt_share > 0:
            accumulated = heavy_scores(whole)
            votes = (1 - self.prompt_share) * _normalised(votes) + self.prompt_share * _normalised(
                accumulated
            )
        # Step 1: the structural rung, judged on the observation rows.
        p_struct = make_params((b, h), dev, level=2, n_sink=1, window=self.min_window)
        static, window, _ = prefill_parts(
            profile.cls, profile.pos, profile.real, n_real, votes, p_struct
        )
        rec = kept_mass(profile, static, p_struct).min(-1).values  # [B, H]
        structural = rec >= self.structural_recovery
        # Step 2: what the other heads protect.
        # The protected recent span: the observation window, or ``recent_share`` of the budget.
        recent = torch.maximum(
            budgets(self.kept_fraction * self.recent_share, n_real),
            torch.full_like(n_real, self.window),
        )
        obs = torch.minimum(_row(n_real, h), _row(recent, h))
        p_hh = make_params(
            (b, h),
            dev,
            level=1,
            n_sink=self.sinks,
            window=self.min_window,
            keep_from=_row(n_real, h) - obs,
        )
        s_hh, w_hh, _ = prefill_parts(profile.cls, profile.pos, profile.real, n_real, votes, p_hh)
        prot = torch.where(structural[..., None], static | window, s_hh | w_hh)  # [B, H, n]
        cand = profile.real[:, None] & ~prot & ~structural[..., None]
        # Step 3: Ada-KV allocation of the remaining budget over the candidates of all heads.
        total = budgets(self.kept_fraction, n_real) * h  # [B]
        left = (total - prot.sum((1, 2))).clamp(min=0)  # [B]
        n_cand = cand.sum(-1)  # [B, H]
        share = torch.floor(left.double() * self.alpha / h).long()  # [B]
        floor = torch.minimum(n_cand, share[:, None])  # [B, H]
        k_f = allocate(votes, cand, profile.pos, floor, left - floor.sum(-1))
        params = {k: torch.where(structural, p_struct[k], p_hh[k]) for k in p_hh}
        params["k_f"] = torch.where(structural, torch.zeros_like(k_f), k_f)
        s2, w2, f2 = prefill_parts(profile.cls, profile.pos, profile.real, n_real, votes, params)
        keep = s2 | w2 | f2
        recovery = kept_mass(profile, s2 | f2, params).min(-1).values
        return Plan(keep, votes, params, (~structural).long(), self.names, recovery)


@dataclass(frozen=True)
class HybridFastGen(AdaptiveFastGen):
    """``AdaptiveFastGen`` set for retrieval and free continuation at once (the recommended
    policy): heavy hitters ranked by half observation votes, half attention accumulated over
    the whole prompt (``prompt_share=0.5``), the newest half of the budget kept as a recent
    span (``recent_share=0.5``, as H2O keeps), and the budget shared evenly over the heads
    (``alpha=1.0``). FastGen's structural rung stays. Why each setting: the benchmark page's
    ablation (observation votes alone drop passages a continuation copies; Ada-KV's uneven
    shares cost perplexity on some documents; without the recent span H2O-like ranking loses
    the text the continuation depends on)."""

    recent_share: float = 0.5
    prompt_share: float = 0.5
    alpha: float = 1.0
    names: tuple[str, ...] = ("structural", "hybrid")


def last_rows(profile: Profile, rows: int) -> Profile:
    """The profile of the last ``rows`` profiled query rows only (a view)."""
    if profile.attn.shape[3] <= rows:
        return profile
    return replace(
        profile, attn=profile.attn[:, :, :, -rows:], row_valid=profile.row_valid[:, -rows:]
    )


def _normalised(score: torch.Tensor) -> torch.Tensor:
    """Each head's scores as shares of their sum (``[B, H, n]``)."""
    return score / score.sum(-1, keepdim=True).clamp(min=torch.finfo(score.dtype).tiny)


def allocate(
    score: torch.Tensor, cand: torch.Tensor, pos: torch.Tensor, floor: torch.Tensor, rest
) -> torch.Tensor:
    """Ada-KV's allocation: per head ``[B, H]`` the number of candidates kept, when every head
    keeps its ``floor`` best candidates and the ``rest`` ``[B]`` best of the remaining
    candidates of all heads are kept too (ranking within a head: score, then the newer)."""
    b, h, n = score.shape
    from .rules import top_k_keep

    floor_keep = top_k_keep(cand, score, pos.unsqueeze(1), floor)  # [B, H, n]
    others = cand & ~floor_keep
    flat = torch.where(others, score.float(), torch.full_like(score.float(), -math.inf))
    flat = flat.reshape(b, h * n)
    order = torch.argsort(flat, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(h * n, device=order.device).expand_as(order))
    chosen = others.reshape(b, h * n) & (rank < rest.clamp(min=0)[:, None])
    return floor + chosen.reshape(b, h, n).sum(-1)


@dataclass(frozen=True)
class Full(Policy):
    """Keep everything (the reference point; exercises the ragged path without pruning)."""

    profile_window: int = 16

    def plan(self, profile: Profile) -> Plan:
        return self._single(profile, "full", heavy_scores(profile), window=UNBOUNDED)


@dataclass(frozen=True)
class StreamingLLM(Policy):
    """Attention sinks + a sliding window: ``kept_fraction`` of the sequence in total (at least
    the last ``min_window`` tokens; sinks only where the budget leaves room beside them)."""

    kept_fraction: float = 0.5
    sinks: int = 4
    profile_window: int = 16
    min_window: int = 16

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_min_window(self.min_window)

    def plan(self, profile: Profile) -> Plan:
        _b, h = profile.shape
        total = _row(budgets(self.kept_fraction, profile.n_real), h)
        # Sinks come out of what the budget leaves beside the minimum window: a budget
        # below the minimum window keeps just the window.
        sinks = (total - self.min_window).clamp(min=0, max=self.sinks)
        return self._single(
            profile,
            "streaming",
            heavy_scores(profile),
            n_sink=sinks,
            window=self.min_window,
            window_q=fraction_q(self.kept_fraction),
        )


@dataclass(frozen=True)
class H2O(Policy):
    """Heavy hitters (cumulative attention) + recent tokens, ``recent_share`` of the budget for
    the recent ones; ``kept_fraction`` of the sequence in total.

    Scores start from the profiled rows (H2O itself sums all prompt rows; a window keeps the
    prefill on SDPA)."""

    kept_fraction: float = 0.5
    recent_share: float = 0.5
    profile_window: int = 1024
    min_window: int = 16

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_ratio("recent_share", self.recent_share)
        _check_min_window(self.min_window)

    def plan(self, profile: Profile) -> Plan:
        f = self.kept_fraction
        return self._single(
            profile,
            "h2o",
            heavy_scores(profile),
            window=self.min_window,
            window_q=fraction_q(f * self.recent_share),
            k_f_q=fraction_q(f),
        )


@dataclass(frozen=True)
class TOVA(Policy):
    """Token Omission Via Attention (Oren et al., 2024): keep the tokens the *current* query
    attends to most, its attention averaged over every query head of the layer, so every KV
    head of a layer keeps the same tokens (the paper's rule and its reference code; scores
    are replaced, not accumulated, each step); ``kept_fraction`` of the sequence."""

    kept_fraction: float = 0.5
    profile_window: int = 1
    score_mode: Literal["cumulative", "last"] = "last"
    layer_scores: bool = True
    min_window: int = 16

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_min_window(self.min_window)

    def plan(self, profile: Profile) -> Plan:
        b, h = profile.shape
        # The last prompt row's attention, averaged over all query heads of the layer.
        last = profile.attn[:, :, :, -1, :].mean(dim=(1, 2))  # [B, n]
        score = last[:, None, :].expand(b, h, -1).contiguous()
        return self._single(
            profile, "tova", score, window=self.min_window, k_f_q=fraction_q(self.kept_fraction)
        )


def layer_mean_scores(
    weights: torch.Tensor,
    seg: torch.Tensor,
    pos: torch.Tensor,
    live: torch.Tensor,
    n_kv: int,
    batch: int,
    bound: int,
) -> torch.Tensor:
    """A decoding step's attention per pool row, averaged over every query head of the layer
    for the row's position (``layer_scores`` policies: TOVA): ``[N, 1]`` from ``weights``
    ``[N, G]``, ``seg``/``pos``/``live`` ``[N]`` (the store's per-row segment, position and
    liveness); ``bound`` exceeds every position. Heads that keep the same positions (TOVA's
    do) get the same scores, so their evictions stay the same."""
    step = weights.sum(-1) * live.to(weights.dtype)  # [N]
    key = (seg.long() // n_kv) * bound + pos.long().clamp(min=0)
    acc = torch.zeros(batch * bound, dtype=step.dtype, device=step.device)
    acc.index_add_(0, key, step)
    return (acc[key] / (n_kv * weights.shape[-1])).unsqueeze(-1)


@dataclass(frozen=True)
class SnapKV(Policy):
    """SnapKV: the last ``window`` prompt queries vote (pooled over ``kernel`` neighbouring
    keys) for the prefix tokens to keep, ``kept_fraction`` of the prompt in total; the
    observation window and all generated tokens are kept (no compression while decoding)."""

    kept_fraction: float = 0.5
    window: int = 64
    kernel: int = 5
    pooling: Literal["max", "avg"] = "max"
    min_window: int = 16

    def __post_init__(self):
        _check_fraction(self.kept_fraction)
        _check_min_window(self.min_window)
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(
                f"SnapKV window must be an int >= 1 (observation rows), got {self.window!r}"
            )
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel!r}")

    @property
    def profile_window(self) -> int:  # type: ignore[override]
        return self.window

    def plan(self, profile: Profile) -> Plan:
        _b, h = profile.shape
        n_real = profile.n_real
        total = _row(budgets(self.kept_fraction, n_real), h)
        obs = torch.minimum(_row(n_real, h), torch.full_like(total, self.window)).clamp(max=total)
        votes = pooled_votes(profile, self.kernel, self.pooling)
        keep_from = _row(n_real, h) - obs
        return self._single(
            profile,
            "snapkv",
            votes,
            keep_from=keep_from,
            k_f=total - obs,
            window=self.min_window,
        )


__all__ = [
    "COMPONENTS",
    "H2O",
    "PAPER_LADDER",
    "TOVA",
    "AdaptiveFastGen",
    "FastGen",
    "Full",
    "HybridFastGen",
    "Plan",
    "Policy",
    "Profile",
    "SnapKV",
    "StreamingLLM",
    "allocate",
    "heavy_scores",
    "kept_mass",
    "layer_mean_scores",
    "pooled_votes",
]
