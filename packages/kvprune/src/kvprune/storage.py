"""Ragged per-(row, KV head) storage of one layer: build from a plan, append, grow, evict.

Layout: a flat pool ``k_pool``/``v_pool`` ``[N, D]``; segment ``s = b * n_kv + h`` owns rows
``offsets[s] .. offsets[s] + capacity[s] - 1``, of which the first ``lengths[s]`` are live. Per
row of the pool: ``slot_pos`` (position of the token among its row's real tokens), ``slot_cls``
(token class), ``slot_score`` (accumulated attention), ``slot_seg`` (its segment),
``slot_static`` (protected for good: class, sink or ``keep_from``) and ``slot_live``. Pruned
entries are not in the pool, so their bytes are freed.

A decode step (``append`` then ``after_step``) is a fixed sequence of tensor operations with no
host synchronization: eviction removes at most one token per segment per step (``rules``), and
the host tracks a lower bound of every segment's free rows (``headroom``), reading the device
only when that bound runs out. ``reserve`` rows per segment at build time (for example the
number of tokens to generate) make a whole generation free of synchronization, which is what
CUDA-graph capture of a decode step needs.
"""

from __future__ import annotations

import torch

from . import rules
from .policies import Plan

POOLS = ("k_pool", "v_pool", "slot_pos", "slot_cls", "slot_score", "slot_static", "slot_live")


class RaggedStore:
    def __init__(self, *, slack: int = 8, reserve: int = 0, score_mode: str = "cumulative"):
        if slack < 1:
            raise ValueError(f"slack must be >= 1 (one free row per segment), got {slack}")
        self.slack = int(slack)
        self.reserve = int(reserve)
        self.score_mode = score_mode
        self.k_pool = self.v_pool = torch.empty(0)
        self.slot_pos = self.slot_cls = self.slot_score = self.slot_seg = torch.empty(0)
        self.slot_static = self.slot_live = torch.empty(0, dtype=torch.bool)
        self.offsets = self.lengths = self.capacity = torch.empty(0, dtype=torch.long)
        self.params: dict[str, torch.Tensor] = {}
        self.next_pos = torch.empty(0, dtype=torch.long)  # [B] position of the next token
        self.batch = self.n_kv = 0
        self.max_cap = 0  # host copy: an upper bound of every segment's length
        self.headroom = 0  # host copy: every segment has at least this many free rows
        self.needs_scores = False
        self.can_evict = False
        self.built = False

    # -- build ---------------------------------------------------------------------------
    def build(self, plan: Plan, key, value, cls, pos, n_real) -> None:
        """Fill the pool with the plan's kept set of a ``[B, H, n, D]`` prompt."""
        b, h, n, d = key.shape
        keep = plan.keep
        counts = keep.sum(-1).reshape(-1)
        self.lengths = counts.clone()
        self._set_capacity(counts + self.slack + self.reserve)
        dest = (self.offsets.view(b, h, 1) + keep.long().cumsum(-1) - 1)[keep]
        rows = int(self.capacity.sum())
        self.k_pool = key.new_empty(rows, d)
        self.v_pool = value.new_empty(rows, d)
        self.k_pool[dest] = key[keep]
        self.v_pool[dest] = value[keep]
        dev = key.device
        self.slot_pos = torch.full((rows,), -1, dtype=torch.int32, device=dev)
        self.slot_cls = torch.zeros(rows, dtype=torch.int8, device=dev)
        self.slot_score = torch.zeros(rows, dtype=torch.float32, device=dev)
        self.slot_pos[dest] = pos.unsqueeze(1).expand(b, h, n)[keep].int()
        self.slot_cls[dest] = cls.unsqueeze(1).expand(b, h, n)[keep]
        self.slot_score[dest] = plan.score[keep].float()
        self.params = {k: v.reshape(-1).clone() for k, v in plan.params.items()}
        self.slot_live = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.slot_live[dest] = True
        seg = self.slot_seg.long()
        self.slot_static = rules.protected_static(
            self.slot_cls, self.slot_pos.long(), {k: v[seg] for k, v in self.params.items()}
        )
        # Scores decide evictions only where a segment keeps some but not all of its
        # unprotected tokens; elsewhere the decode kernel may skip the per-key weights.
        # (A segment with ``keep_from`` set keeps every new token: its set never changes.)
        k_f, k_f_q = self.params["k_f"], self.params["k_f_q"]
        bounded = (k_f < rules.UNBOUNDED) & (k_f_q < rules.FRACTION_ONE)
        evicting = self.params["keep_from"] >= rules.UNBOUNDED
        self.needs_scores = bool((((k_f > 0) | (k_f_q > 0)) & bounded & evicting).any())
        # Segments that keep every new token (keep_from, an unbounded window) never evict.
        self.can_evict = bool((evicting & (self.params["window"] < rules.UNBOUNDED)).any())
        self.next_pos = n_real.clone().long()
        self.batch, self.n_kv = b, h
        self.built = True

    def _set_capacity(self, cap: torch.Tensor) -> None:
        self.capacity = cap
        self.offsets = cap.cumsum(0) - cap
        s = cap.shape[0]
        self.slot_seg = torch.repeat_interleave(
            torch.arange(s, dtype=torch.int32, device=cap.device), cap
        )
        self.max_cap = int(cap.max()) if s else 0
        self.headroom = int((cap - self.lengths).min()) if s else 0

    # -- decoding ------------------------------------------------------------------------
    def append(self, k_new, v_new, cls_new) -> None:
        """Write one new token per row (``k_new``/``v_new`` ``[B, H, D]``, ``cls_new`` ``[B]``)."""
        b, h, d = k_new.shape
        if self.headroom < 1:
            self.headroom = int((self.capacity - self.lengths).min())
            if self.headroom < 1:
                self._grow()
        dest = self.offsets + self.lengths
        self.k_pool[dest] = k_new.reshape(b * h, d).to(self.k_pool.dtype)
        self.v_pool[dest] = v_new.reshape(b * h, d).to(self.v_pool.dtype)
        self.slot_pos[dest] = self.next_pos.repeat_interleave(h).int()
        cls_seg = cls_new.repeat_interleave(h).to(torch.int8)
        self.slot_cls[dest] = cls_seg
        self.slot_score[dest] = 0.0
        self.slot_static[dest] = rules.protected_static(
            cls_seg, self.next_pos.repeat_interleave(h), self.params
        )
        self.slot_live[dest] = True
        self.lengths += 1
        self.headroom -= 1

    def _grow(self) -> None:
        need = self.lengths >= self.capacity
        extra = torch.clamp(self.lengths // 8, min=self.slack)
        new_cap = torch.where(need, self.lengths + extra, self.capacity)
        old_off, old_seg = self.offsets, self.slot_seg.long()
        live = self.live()
        src = live.nonzero().squeeze(1)
        self._set_capacity(new_cap)
        dst = self.offsets[old_seg[src]] + (src - old_off[old_seg[src]])
        rows = int(new_cap.sum())
        for name in POOLS:
            old = getattr(self, name)
            new = old.new_empty((rows, *old.shape[1:]))
            if name == "slot_pos":
                new.fill_(-1)
            elif name != "k_pool" and name != "v_pool":
                new.zero_()
            new[dst] = old[src]
            setattr(self, name, new)

    def after_step(self, weights: torch.Tensor | None) -> None:
        """Add the step's attention ``[N, G]`` to the scores (None: no segment needs them),
        evict what the rule says, advance the positions."""
        if weights is not None:
            step = weights.sum(-1)
            if self.score_mode == "last":
                self.slot_score.copy_(step)
            else:
                self.slot_score += step
        if self.can_evict:
            self._evict_one()
        self.next_pos += 1

    def live(self) -> torch.Tensor:
        return self.slot_live

    def _evict_one(self) -> None:
        """Evict the lowest-scoring unprotected token (the oldest among ties) of every segment
        over its budget; fixed shapes, no host synchronization."""
        seg = self.slot_seg.long()
        n_rows, n_seg = seg.shape[0], self.lengths.shape[0]
        dev = seg.device
        newest = self.next_pos.repeat_interleave(self.n_kv)  # [S]
        pos = self.slot_pos.long()
        oldest_in_window = newest - rules.window_at(self.params, newest + 1)  # [S]
        prot = self.slot_static | (pos > oldest_in_window[seg])
        cand = self.slot_live & ~prot
        count = torch.zeros(n_seg, dtype=torch.long, device=dev).index_add_(0, seg, cand.long())
        over = count > rules.k_f_at(self.params, newest + 1)  # [S]
        inf = torch.full((n_rows,), float("inf"), device=dev)
        key = torch.where(cand, self.slot_score, inf)
        low = torch.full((n_seg,), float("inf"), device=dev).scatter_reduce(0, seg, key, "amin")
        tie = cand & (self.slot_score == low[seg])
        big = torch.full((n_rows,), rules.UNBOUNDED, dtype=torch.long, device=dev)
        oldest = big[:n_seg].clone().scatter_reduce(0, seg, torch.where(tie, pos, big), "amin")
        is_victim = tie & (pos == oldest[seg]) & over[seg]
        row_ids = torch.arange(n_rows, device=dev)
        victim = (
            big[:n_seg].clone().scatter_reduce(0, seg, torch.where(is_victim, row_ids, big), "amin")
        )
        last = self.offsets + (self.lengths - 1).clamp(min=0)  # an empty segment: its own row
        dst = torch.where(over, victim, last)
        for name in POOLS:
            t = getattr(self, name)
            t[dst] = t[last]
        self.slot_pos[last] = torch.where(over, -1, self.slot_pos[last])
        self.slot_live[last] = self.slot_live[last] & ~over
        self.lengths -= over.long()

    # -- introspection -------------------------------------------------------------------
    def kept_positions(self, b: int, h: int) -> list[int]:
        s = b * self.n_kv + h
        off, n = int(self.offsets[s]), int(self.lengths[s])
        return sorted(int(x) for x in self.slot_pos[off : off + n])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the store holds (what its memory is made of)."""
        if not self.built:
            return {}
        out = {name: getattr(self, name) for name in POOLS}
        out.update(
            slot_seg=self.slot_seg,
            offsets=self.offsets,
            lengths=self.lengths,
            capacity=self.capacity,
            next_pos=self.next_pos,
        )
        out.update({f"param_{k}": v for k, v in self.params.items()})
        return out
