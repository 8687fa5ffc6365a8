"""Reference decode attention over a ragged per-(batch, KV head) cache: the spec of the kernel.

Layout. The cache of one layer is a flat pool ``k_pool``/``v_pool`` of shape ``[N, D]``. Segment
``s`` (one per ``(batch, kv_head)``, ``s = b * n_kv_heads + h``) owns the rows
``offsets[s] .. offsets[s] + lengths[s] - 1``; rows of the pool outside every segment (free slack
at the end of a segment) are never read. Keys are stored after RoPE, so their order inside a
segment does not matter.

One decode step: ``q`` is ``[S, G, D]``, the ``G`` query heads of each KV group (grouped-query
attention; ``G = 1`` for multi-head attention). For each segment and query head::

    p = softmax(scale * q[s, g] @ K_s^T)        # over the segment's rows only
    out[s, g] = p @ V_s                         # in q's dtype
    weights[offsets[s] + j, g] = p[j]           # float32, the attention each cached key got

``weights`` is ``[N, G]`` float32 and is zero on rows outside every segment: it is what
heavy-hitter policies (FastGen's frequent tokens, H2O, TOVA) accumulate. With
``need_weights=False`` it is not computed and ``None`` is returned in its place (the kernel then
skips writing and normalising per-key weights: the fast path when no policy needs scores). An
empty segment gives a zero output. Softmax is computed in float32.
"""

from __future__ import annotations

import torch


def check_args(q, k_pool, v_pool, offsets, lengths) -> None:
    if q.dim() != 3:
        raise ValueError(f"q must be [segments, group, head_dim], got shape {tuple(q.shape)}")
    if k_pool.dim() != 2 or k_pool.shape != v_pool.shape:
        raise ValueError(
            f"k_pool and v_pool must both be [rows, head_dim], got {tuple(k_pool.shape)} "
            f"and {tuple(v_pool.shape)}"
        )
    if k_pool.shape[1] != q.shape[2]:
        raise ValueError(f"head_dim mismatch: q has {q.shape[2]}, the pool {k_pool.shape[1]}")
    if offsets.shape != (q.shape[0],) or lengths.shape != (q.shape[0],):
        raise ValueError(
            f"offsets and lengths must be [{q.shape[0]}] (one per segment), got "
            f"{tuple(offsets.shape)} and {tuple(lengths.shape)}"
        )
    if k_pool.dtype != q.dtype or v_pool.dtype != q.dtype:
        raise ValueError(
            f"q, k_pool and v_pool must share a dtype, got {q.dtype}, {k_pool.dtype}, {v_pool.dtype}"
        )


def segment_index(offsets: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[S, max_len]`` pool row of each segment position, -1 past the segment's length."""
    j = torch.arange(max_len, device=offsets.device)
    rows = offsets.long()[:, None] + j[None, :]
    return torch.where(j[None, :] < lengths.long()[:, None], rows, torch.full_like(rows, -1))


def ragged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    max_len: int | None = None,
    need_weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(out [S, G, D] in q.dtype, weights [N, G] float32 or None)``; see the module docstring.

    ``max_len`` (an upper bound of ``lengths``) only saves a device sync; it never changes the
    result.
    """
    check_args(q, k_pool, v_pool, offsets, lengths)
    if q.device.type == "cpu":
        return per_segment(q, k_pool, v_pool, offsets, lengths, scale, need_weights)
    return gathered(q, k_pool, v_pool, offsets, lengths, scale, max_len, need_weights)


def per_segment(q, k_pool, v_pool, offsets, lengths, scale, need_weights=True):
    """The CPU form: each segment attends over its rows of the pool in place (views, no
    copy of the cache; reading ``offsets``/``lengths`` costs nothing on the CPU)."""
    group = q.shape[1]
    out = q.new_zeros(q.shape)
    weights = None
    if need_weights:
        weights = torch.zeros(k_pool.shape[0], group, dtype=torch.float32, device=q.device)
    for s, (off, n) in enumerate(zip(offsets.tolist(), lengths.tolist(), strict=True)):
        if n == 0:
            continue
        keys = k_pool[off : off + n].float()  # [L, D]
        vals = v_pool[off : off + n].float()
        probs = torch.softmax((q[s].float() @ keys.T) * scale, dim=-1)  # [G, L]
        out[s] = (probs @ vals).to(q.dtype)
        if weights is not None:
            weights[off : off + n] = probs.T
    return out, weights


def gathered(q, k_pool, v_pool, offsets, lengths, scale, max_len=None, need_weights=True):
    """The device form: every segment gathered into a padded ``[S, L, D]`` batch (no host
    synchronization when ``max_len`` is given)."""
    n_seg, group, _dim = q.shape
    weights = torch.zeros(k_pool.shape[0], group, dtype=torch.float32, device=q.device)
    if not need_weights:
        weights = None
    if n_seg == 0:
        return q.new_zeros(q.shape), weights
    longest = max_len if max_len is not None else int(lengths.max()) if lengths.numel() else 0
    if longest == 0:
        return q.new_zeros(q.shape), weights
    idx = segment_index(offsets, lengths, longest)  # [S, L]
    valid = idx >= 0
    safe = idx.clamp(min=0)
    keys = k_pool[safe].float()  # [S, L, D]
    vals = v_pool[safe].float()
    logits = torch.einsum("sgd,sld->sgl", q.float(), keys) * scale
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    probs = torch.where(valid[:, None, :], probs, torch.zeros_like(probs))  # empty rows: 0, not NaN
    out = torch.einsum("sgl,sld->sgd", probs, vals)
    if weights is None:
        return out.to(q.dtype), None
    flat_rows = idx[valid]  # [nnz]
    weights[flat_rows] = probs.permute(0, 2, 1)[valid]
    return out.to(q.dtype), weights
