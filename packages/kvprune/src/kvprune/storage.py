"""Ragged per-(row, KV head) storage of one layer: build from a plan, append, grow, evict.

Layout. Keys and values live in a flat pool ``k_pool``/``v_pool`` ``[N, D]``; segment
``s = b * n_kv + h`` owns rows ``offsets[s] .. offsets[s] + capacity[s] - 1``, of which the
first ``lengths[s]`` are live. Pruned entries are not in the pool, so their bytes are freed.
The per-slot metadata the rule needs is padded to ``[S, W]``, column ``j`` of segment ``s``
describing pool row ``offsets[s] + j``: ``pos`` (position of the token among its row's real
tokens, -1 for an empty slot), ``score`` (accumulated or last attention, never negative) and
``evictable`` (live and not protected for good by class, sink or ``keep_from``). Column
``W - 1`` never holds a token (eviction writes there for a segment that evicts nothing). Per
segment: ``lengths`` and ``next`` (the position of the next token). Between steps, column
``lengths[s]`` already holds the next token's position and a zero score (prepared by
``finish_step``); what a segment keeps is its columns below ``lengths[s]``.

A decode step is ``append`` (the token's key and value into the slot the last step prepared),
attention, ``after_step`` (the step's attention into the scores) and ``finish_step`` (the
token's protection, the rule's eviction, the next slot prepared): a fixed sequence of tensor
operations with no host synchronization. The rule evicts at most one token per segment per step
(``rules``); the victim of each segment is the argmin of a packed key ``(score bits,
position)`` over its row of the metadata (lowest score, then the oldest), and the segment's
last live slot moves into the victim's, as a compacting list does (the pool rows move at the
next append, so the pool holds exactly what evicting row by row would leave). The host tracks a
lower bound of every segment's free rows (``headroom``), reading the device only when that
bound runs out; ``reserve`` rows per segment at build time make a whole generation free of
synchronization (what CUDA-graph capture needs).

The metadata of several layers can share one ``Arena`` (``[L, S, W]`` tensors whose ``[l]``
slices are the layers' own tensors): a cache then finishes the step of all its layers at once
after the step's last layer (``Arena.flush``), about forty tensor operations per step instead
of that many per layer, and a layer's own share of a step is its key/value writes and score
update. A layer's ``finish_step`` only has to happen before its next append, so deferring it
to the end of the step keeps exactly what finishing layer by layer keeps.
"""

from __future__ import annotations

import torch

from . import rules
from .policies import Plan

KEY_NONE = torch.iinfo(torch.int64).max  # the packed key of a slot that cannot be evicted


def finish_held_step(state, cls, active) -> None:
    """``finish_step`` over the slot metadata of ``state`` (a ``RaggedStore`` or an
    ``Arena``: both hold ``pos``, ``score``, ``evictable``, ``lengths``, ``move_src``,
    ``move_dst``, ``next`` and ``params``)."""
    finish_step(
        state.pos,
        state.score,
        state.evictable,
        state.lengths,
        state.move_src,
        state.move_dst,
        state.next,
        state.params,
        cls,
        active,
    )


def finish_step(
    pos, score, evictable, lengths, move_src, move_dst, next_pos, params, cls, active
) -> None:
    """The end of a decoding step over ``[..., S, W]`` slot metadata (``[..., S]`` per-segment
    tensors), in place and without host synchronization:

    1. the step's token (the segment's last live slot, position ``next_pos``, class ``cls``)
       gets its protection;
    2. where ``active`` (``[..., 1]`` bool, or None: everywhere), every segment over its budget
       loses its lowest-scoring evictable token outside the window (the oldest among ties);
       its last live slot moves into the victim's (metadata here, the pool rows
       ``move_src -> move_dst`` at the next append; a segment that evicts nothing moves its
       last slot onto itself). Budgets as ``rules.window_at`` / ``rules.k_f_at``;
    3. ``next_pos`` advances, and the slot the next token will take gets its position and a
       zero score (so the next step's attention adds to zero).
    """
    newest = (lengths - 1).clamp(min=0).unsqueeze(-1)
    static = rules.protected_static(cls, next_pos, params)
    evictable.scatter_(-1, newest, (~static).unsqueeze(-1))
    if active is not False:
        _evict(pos, score, evictable, lengths, move_src, move_dst, next_pos + 1, params, active)
    next_pos += 1
    free = lengths.unsqueeze(-1)
    pos.scatter_(-1, free, next_pos.int().unsqueeze(-1))
    score.scatter_(-1, free, 0.0)


def _evict(pos, score, evictable, lengths, move_src, move_dst, length, params, active) -> None:
    window = torch.maximum(
        params["window"], ((params["window_q"] * length) >> rules.FRACTION_BITS) - params["n_sink"]
    )
    k_f = torch.maximum(
        params["k_f"],
        ((params["k_f_q"] * length) >> rules.FRACTION_BITS) - window - params["n_sink"],
    )
    oldest_in_window = length - window  # positions >= this are in the window
    cand = evictable & (pos < oldest_in_window.unsqueeze(-1))
    over = cand.sum(-1) > k_f
    if active is not None:
        over &= active
    # Scores are non-negative floats, whose bit patterns order as integers do: the packed key
    # (score bits, position) orders by score, then by position.
    key = (score.view(torch.int32).to(torch.int64) << 32) | pos
    victim = torch.where(cand, key, KEY_NONE).argmin(-1)
    last = (lengths - 1).clamp(min=0)
    dst = torch.where(over, victim, last).unsqueeze(-1)
    src = last.unsqueeze(-1)
    for t in (pos, score, evictable):
        t.scatter_(-1, dst, t.gather(-1, src))
    dead = torch.where(over, last, pos.shape[-1] - 1).unsqueeze(-1)  # else: scratch column
    pos.scatter_(-1, dead, -1)
    evictable.scatter_(-1, dead, False)
    lengths -= over.long()
    move_src.copy_(last)
    move_dst.copy_(dst.squeeze(-1))


class Arena:
    """The slot metadata of one or more stores (layers) of equal segment count, padded to one
    width: ``pos``/``score``/``evictable`` ``[L, S, W]``; ``lengths``, ``move_src``,
    ``move_dst``, ``next`` and the rule's parameters ``[L, S]``. Each member's tensors are
    views of its ``[l]`` slice."""

    SLOTS = ("pos", "score", "evictable")
    SEGMENTS = ("lengths", "move_src", "move_dst", "next")
    pos: torch.Tensor
    score: torch.Tensor
    evictable: torch.Tensor
    lengths: torch.Tensor
    move_src: torch.Tensor
    move_dst: torch.Tensor
    next: torch.Tensor
    params: dict[str, torch.Tensor]

    def __init__(self, stores: list[RaggedStore], width: int | None = None):
        self.members = list(stores)
        self.batched_steps = 0  # steps finished for every member at once (a host counter)
        first = self.members[0]
        self.width = max([width or 0] + [s.pos.shape[-1] for s in self.members])
        evicting = [m.can_evict for m in self.members]
        self.active: torch.Tensor | bool | None = None  # which members evict (None: all)
        if not any(evicting):
            self.active = False
        elif not all(evicting):
            self.active = torch.tensor(evicting, device=first.pos.device).view(-1, 1)
        if len(self.members) == 1 and self.width == first.pos.shape[-1]:
            # One store: its own tensors, no copy.
            for name in (*self.SLOTS, *self.SEGMENTS):
                setattr(self, name, getattr(first, name).unsqueeze(0))
            self.params = {k: v.unsqueeze(0) for k, v in first.params.items()}
        else:
            self._allocate(self.members)
        for i, store in enumerate(self.members):
            store.bind(self, i)

    def _allocate(self, sources: list) -> None:
        n, s, w = len(sources), sources[0].pos.shape[-2], self.width
        like = sources[0]
        self.pos = like.pos.new_full((n, s, w), -1)
        self.score = like.score.new_zeros((n, s, w))
        self.evictable = like.evictable.new_zeros((n, s, w))
        for i, src in enumerate(sources):
            for name in self.SLOTS:
                old = getattr(src, name)
                getattr(self, name)[i, :, : old.shape[-1]] = old
        for name in self.SEGMENTS:
            setattr(self, name, torch.stack([getattr(src, name) for src in sources]))
        self.params = {k: torch.stack([src.params[k] for src in sources]) for k in like.params}

    def widen(self, width: int) -> None:
        """Make room for ``width - 1`` rows per segment (every member is re-bound)."""
        if width <= self.width:
            return
        self.width = width
        self._allocate(self.members)
        for i, store in enumerate(self.members):
            store.bind(self, i)

    def flush(self) -> None:
        """Finish the step of every member with one pending: all at once when all have one
        (the same step: the same token classes)."""
        pending = [s.pending for s in self.members]
        cls = self.members[0].step_cls
        if all(pending) and all(s.step_cls is cls for s in self.members):
            assert cls is not None
            finish_held_step(self, cls.repeat_interleave(self.members[0].n_kv), self.active)
            for s in self.members:
                s.step_finished()
            self.batched_steps += 1
        elif any(pending):
            for s in self.members:
                s.settle()


class RaggedStore:
    def __init__(self, *, slack: int = 8, reserve: int = 0, score_mode: str = "cumulative"):
        if slack < 1:
            raise ValueError(f"slack must be >= 1 (one free row per segment), got {slack}")
        self.slack = int(slack)
        self.reserve = int(reserve)
        self.score_mode = score_mode
        self.k_pool = self.v_pool = torch.empty(0)
        self.pos = torch.empty(0, 1, dtype=torch.int32)
        self.score = torch.empty(0, 1)
        self.evictable = torch.empty(0, 1, dtype=torch.bool)
        self.offsets = self.capacity = torch.empty(0, dtype=torch.long)
        self.lengths = self.next = torch.empty(0, dtype=torch.long)
        self.move_src = self.move_dst = torch.empty(0, dtype=torch.long)
        self.slot_index = torch.empty(0, dtype=torch.long)  # pool row -> flat [S, W] index
        self.params: dict[str, torch.Tensor] = {}
        self.arena: Arena | None = None
        self.layer = 0  # this store's index in its arena
        self.batch = self.n_kv = 0
        self.max_cap = 0  # host copy: an upper bound of every segment's length
        self.headroom = 0  # host copy: every segment has at least this many free rows
        self.needs_scores = False
        self.can_evict = False
        self.defer = False  # eviction waits for the arena's flush (set by a cache)
        self.pending = False  # a step's eviction is still to do
        self.moves = False  # the pool rows of the last eviction are still to move
        self.step_cls: torch.Tensor | None = None  # [B] class of the step's token
        self.built = False

    # -- build ---------------------------------------------------------------------------
    def build(self, plan: Plan, key, value, cls, pos, n_real) -> None:
        """Fill the pool with the plan's kept set of a ``[B, H, n, D]`` prompt."""
        b, h, n, d = key.shape
        keep = plan.keep
        counts = keep.sum(-1).reshape(-1)
        dev = key.device
        self.lengths = counts.clone()
        self.capacity = counts + self.slack + self.reserve
        self.offsets = self.capacity.cumsum(0) - self.capacity
        self.max_cap = int(self.capacity.max()) if b * h else 0
        self.headroom = int((self.capacity - self.lengths).min()) if b * h else 0
        col = keep.long().cumsum(-1) - 1  # [B, H, n]: the column of each kept token
        rows = int(self.capacity.sum())
        dest = (self.offsets.view(b, h, 1) + col)[keep]
        self.k_pool = key.new_empty(rows, d)
        self.v_pool = value.new_empty(rows, d)
        self.k_pool[dest] = key[keep]
        self.v_pool[dest] = value[keep]
        width = self.max_cap + 1
        seg = torch.arange(b * h, device=dev).view(b, h, 1)
        slot = (seg * width + col)[keep]
        self.params = {k: v.reshape(-1).clone() for k, v in plan.params.items()}
        p3 = {k: v.view(b, h, 1) for k, v in self.params.items()}
        static = rules.protected_static(cls.unsqueeze(1), pos.unsqueeze(1), p3)
        pos3 = pos.unsqueeze(1).expand(b, h, n)
        self.pos = torch.full((b * h, width), -1, dtype=torch.int32, device=dev)
        self.pos.view(-1)[slot] = pos3[keep].int()
        self.score = torch.zeros(b * h, width, dtype=torch.float32, device=dev)
        self.score.view(-1)[slot] = plan.score[keep].float()
        self.evictable = torch.zeros(b * h, width, dtype=torch.bool, device=dev)
        self.evictable.view(-1)[slot] = ~static.expand(b, h, n)[keep]
        self.move_src = torch.zeros_like(self.lengths)
        self.move_dst = torch.zeros_like(self.lengths)
        self.next = n_real.long().repeat_interleave(h)
        self.pos.scatter_(1, self.lengths.unsqueeze(1), self.next.int().unsqueeze(1))
        # Which segments can ever evict: a bounded window, unless ``keep_from`` protects every
        # token that will leave the window (no growing budgets, the prompt's window already at
        # or past ``keep_from``): then the candidates are the prompt's heavy hitters for good.
        p = self.params
        settled = (
            (p["keep_from"] < rules.UNBOUNDED)
            & (p["window_q"] == 0)
            & (p["k_f_q"] == 0)
            & (p["keep_from"] <= (self.next - p["window"]).clamp(min=0))
        )
        evicts = (p["window"] < rules.UNBOUNDED) & ~settled
        # Scores decide evictions only where such a segment keeps some but not all of its
        # unprotected tokens; elsewhere the decode kernel may skip the per-key weights.
        bounded = (p["k_f"] < rules.UNBOUNDED) & (p["k_f_q"] < rules.FRACTION_ONE)
        self.needs_scores = bool((((p["k_f"] > 0) | (p["k_f_q"] > 0)) & bounded & evicts).any())
        self.can_evict = bool(evicts.any())
        self.batch, self.n_kv = b, h
        self.defer = self.pending = self.moves = False
        Arena([self])
        self.built = True

    def bind(self, arena: Arena, layer: int) -> None:
        """Use the ``[layer]`` slice of ``arena``'s tensors as this store's metadata."""
        self.arena, self.layer = arena, layer
        for name in (*Arena.SLOTS, *Arena.SEGMENTS):
            setattr(self, name, getattr(arena, name)[layer])
        self.params = {k: v[layer] for k, v in arena.params.items()}
        self._index_slots()

    def _index_slots(self) -> None:
        """``slot_index``: each pool row's flat index in the ``[S, W]`` metadata."""
        cap, s = self.capacity, self.capacity.shape[0]
        seg = torch.repeat_interleave(torch.arange(s, device=cap.device), cap)
        row = torch.arange(seg.shape[0], device=cap.device)
        self.slot_index = seg * self.pos.shape[-1] + row - self.offsets[seg]

    # -- decoding ------------------------------------------------------------------------
    def append(self, k_new, v_new, cls_new) -> None:
        """Write one new token per row (``k_new``/``v_new`` ``[B, H, D]``, ``cls_new`` ``[B]``)
        into the slot the last step prepared (its position and zero score are already there;
        its protection is set when the step finishes)."""
        self.settle()
        if self.moves:
            self._move_rows()
        b, h, d = k_new.shape
        if self.headroom < 1:
            self.headroom = int((self.capacity - self.lengths).min())
            if self.headroom < 1:
                self._grow()
        dest = self.offsets + self.lengths
        self.k_pool[dest] = k_new.reshape(b * h, d).to(self.k_pool.dtype)
        self.v_pool[dest] = v_new.reshape(b * h, d).to(self.v_pool.dtype)
        self.lengths += 1
        self.headroom -= 1
        self.step_cls = cls_new

    def _move_rows(self) -> None:
        """The pool side of the last eviction: each segment's last row into its victim's."""
        src, dst = self.offsets + self.move_src, self.offsets + self.move_dst
        for pool in (self.k_pool, self.v_pool):
            pool.index_copy_(0, dst, pool.index_select(0, src))
        self.moves = False

    def _grow(self) -> None:
        """More rows for the segments that are full (by an eighth of their length, at least
        ``slack``); columns, hence the metadata, stay where they are."""
        need = self.lengths >= self.capacity
        extra = torch.clamp(self.lengths // 8, min=self.slack)
        new_cap = torch.where(need, self.lengths + extra, self.capacity)
        width = self.pos.shape[-1]
        seg, col = self.row_segments(), self.slot_index % width
        self.capacity = new_cap
        self.offsets = new_cap.cumsum(0) - new_cap
        self.max_cap = int(new_cap.max())
        self.headroom = int((new_cap - self.lengths).min())
        dst = self.offsets[seg] + col
        rows = int(new_cap.sum())
        for name in ("k_pool", "v_pool"):
            old = getattr(self, name)
            new = old.new_empty((rows, old.shape[1]))
            new[dst] = old
            setattr(self, name, new)
        assert self.arena is not None
        if self.max_cap + 1 > width:
            self.arena.widen(max(self.max_cap + 1, width + width // 8))
        self._index_slots()

    def after_step(self, weights: torch.Tensor | None) -> None:
        """Add the step's attention ``[N, G]`` to the scores (None: no segment needs them),
        then finish the step (``finish_step``): now, or at the arena's flush when ``defer``
        is set."""
        if weights is not None:
            step = weights.sum(-1)
            flat = self.score.view(-1)
            if self.score_mode == "last":
                flat.index_copy_(0, self.slot_index, step)
            else:
                flat.index_add_(0, self.slot_index, step)
        self.pending = True
        if not self.defer:
            self.settle()

    def settle(self) -> None:
        """Finish this store's pending step alone (also before its state is read)."""
        if not self.pending:
            return
        assert self.step_cls is not None
        active = None if self.can_evict else False
        finish_held_step(self, self.step_cls.repeat_interleave(self.n_kv), active)
        self.step_finished()

    def step_finished(self) -> None:
        """Mark the pending step finished (its eviction moves pool rows at the next append)."""
        self.pending = False
        self.moves = self.can_evict
        self.step_cls = None

    # -- introspection -------------------------------------------------------------------
    @property
    def next_pos(self) -> torch.Tensor:
        """``[B]`` position of each row's next token."""
        return self.next.view(self.batch, self.n_kv)[:, 0]

    def row_segments(self) -> torch.Tensor:
        """``[N]`` the segment of each pool row."""
        return self.slot_index // self.pos.shape[-1]

    def live(self) -> torch.Tensor:
        """``[N]`` whether each pool row holds a kept token."""
        return self.row_positions() >= 0

    def row_positions(self) -> torch.Tensor:
        """``[N]`` position of each pool row's token (-1: empty)."""
        self.settle()
        width = self.pos.shape[-1]
        seg, col = self.slot_index // width, self.slot_index % width
        rows = self.pos.reshape(-1)[self.slot_index]
        return torch.where(col < self.lengths[seg], rows, -1)

    def kept_positions(self, b: int, h: int) -> list[int]:
        self.settle()
        s = b * self.n_kv + h
        return sorted(int(x) for x in self.pos[s, : int(self.lengths[s])])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the store holds (what its memory is made of; metadata shared in an
        arena: this store's slice)."""
        if not self.built:
            return {}
        out = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        out.update({f"param_{k}": v for k, v in self.params.items()})
        return out

    @classmethod
    def merge_rows(cls, stores: list[RaggedStore]) -> RaggedStore:
        """One store holding the batch rows of ``stores`` in order (built, not yet decoding;
        the serving benchmark batches single-request caches this way)."""
        first = stores[0]
        out = cls(slack=first.slack, reserve=first.reserve, score_mode=first.score_mode)
        width = max(s.pos.shape[-1] for s in stores)
        base = 0
        offsets = []
        for st in stores:
            offsets.append(st.offsets + base)
            base += st.k_pool.shape[0]
        out.k_pool = torch.cat([st.k_pool for st in stores])
        out.v_pool = torch.cat([st.v_pool for st in stores])
        out.offsets = torch.cat(offsets)
        out.capacity = torch.cat([st.capacity for st in stores])
        for name, fill in (("pos", -1), ("score", 0), ("evictable", False)):
            parts = []
            for st in stores:
                t = getattr(st, name)
                pad = t.new_full((t.shape[0], width - t.shape[1]), fill)
                parts.append(torch.cat([t, pad], 1))
            setattr(out, name, torch.cat(parts))
        for name in Arena.SEGMENTS:
            setattr(out, name, torch.cat([getattr(st, name) for st in stores]))
        out.params = {k: torch.cat([st.params[k] for st in stores]) for k in first.params}
        out.batch = sum(st.batch for st in stores)
        out.n_kv = first.n_kv
        out.max_cap = max(st.max_cap for st in stores)
        out.headroom = min(st.headroom for st in stores)
        out.needs_scores = any(st.needs_scores for st in stores)
        out.can_evict = any(st.can_evict for st in stores)
        Arena([out])
        out.built = True
        return out
