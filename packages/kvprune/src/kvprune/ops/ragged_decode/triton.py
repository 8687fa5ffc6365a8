"""Split-K (flash-decoding) Triton kernel for decode attention over the ragged per-head cache.

Grid ``(segments, splits)``: a program loads the ``G`` query heads of one KV group (padded to a
16-row tile so ``tl.dot`` can use tensor cores), walks its share of the segment's rows
``offsets[s] + [start, end)`` in ``BLOCK_N`` tiles with an online softmax, writes the raw scaled
logits of every row it reads into ``weights`` and its partial ``(m, l, acc)``. A second kernel,
same grid, merges the partials of a segment into the output (split 0 writes it) and turns each
split's logits into probabilities ``exp(logit - lse)``. Keys are read once; the weights cost
``G`` float32 per cached row, small next to the ``2 * D`` key/value elements.

Same contract as ``naive.ragged_decode_attention``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import check_args


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    off_ptr,
    len_ptr,
    w_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    scale,
    G,
    D,
    stride_k,
    stride_v,
    CHUNK,
    NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    seg = tl.program_id(0)
    split = tl.program_id(1)
    off = tl.load(off_ptr + seg).to(tl.int64)
    length = tl.load(len_ptr + seg).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gmask = g < G
    dmask = d < D
    q = tl.load(
        q_ptr + seg.to(tl.int64) * G * D + g[:, None] * D + d[None, :],
        mask=gmask[:, None] & dmask[None, :],
        other=0.0,
    )
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, length)
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        rows = off + n.to(tl.int64)
        k = tl.load(
            k_ptr + rows[:, None] * stride_k + d[None, :],
            mask=nmask[:, None] & dmask[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        s = tl.where(nmask[None, :], s, float("-inf"))
        tl.store(w_ptr + rows[None, :] * G + g[:, None], s, mask=gmask[:, None] & nmask[None, :])
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds at least one row
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_ptr + rows[:, None] * stride_v + d[None, :],
            mask=nmask[:, None] & dmask[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    part = seg.to(tl.int64) * NUM_SPLITS + split
    tl.store(m_ptr + part * BLOCK_G + g, m_i)
    tl.store(l_ptr + part * BLOCK_G + g, l_i)
    tl.store(acc_ptr + (part * BLOCK_G + g[:, None]) * BLOCK_D + d[None, :], acc)


@triton.jit
def _merge_kernel(
    out_ptr,
    off_ptr,
    len_ptr,
    w_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    G,
    D,
    CHUNK,
    NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    seg = tl.program_id(0)
    split = tl.program_id(1)
    sp = tl.arange(0, NUM_SPLITS)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    base = seg.to(tl.int64) * NUM_SPLITS + sp
    m_all = tl.load(m_ptr + base[:, None] * BLOCK_G + g[None, :])  # [SPLITS, BLOCK_G]
    l_all = tl.load(l_ptr + base[:, None] * BLOCK_G + g[None, :])
    m_max = tl.max(m_all, 0)
    has = m_all > float("-inf")
    w_split = tl.where(has, tl.exp(m_all - tl.where(has, m_max[None, :], 0.0)), 0.0)
    total = tl.sum(l_all * w_split, 0)  # [BLOCK_G]; 0 only for an empty segment
    safe_total = tl.where(total > 0, total, 1.0)
    lse = m_max + tl.log(safe_total)
    gmask = g < G
    dmask = d < D
    if split == 0:
        acc_all = tl.load(
            acc_ptr
            + (base[:, None, None] * BLOCK_G + g[None, :, None]) * BLOCK_D
            + d[None, None, :]
        )
        out = tl.sum(acc_all * w_split[:, :, None], 0) / safe_total[:, None]
        tl.store(
            out_ptr + seg.to(tl.int64) * G * D + g[:, None] * D + d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=gmask[:, None] & dmask[None, :],
        )
    off = tl.load(off_ptr + seg).to(tl.int64)
    length = tl.load(len_ptr + seg).to(tl.int32)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, length)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        rows = off + n.to(tl.int64)
        ptrs = w_ptr + rows[None, :] * G + g[:, None]
        wmask = gmask[:, None] & nmask[None, :]
        logits = tl.load(ptrs, mask=wmask, other=0.0)
        tl.store(ptrs, tl.exp(logits - lse[:, None]), mask=wmask)


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def plan_splits(max_len: int, *, rows_per_split: int = 512, max_splits: int = 64) -> int:
    """Power-of-two split count: about ``rows_per_split`` rows per program."""
    return min(max_splits, _pow2(max(1, -(-max_len // rows_per_split))))


def ragged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    max_len: int | None = None,
    *,
    num_splits: int | None = None,
    block_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of ``naive.ragged_decode_attention`` (same arguments and results).

    ``num_splits`` (a power of two) and ``block_n`` override the launch heuristics (tests use
    them to exercise several splits and tiles on tiny inputs).
    """
    check_args(q, k_pool, v_pool, offsets, lengths)
    n_seg, group, dim = q.shape
    q = q.contiguous()
    if k_pool.stride(1) != 1:
        k_pool = k_pool.contiguous()
    if v_pool.stride(1) != 1:
        v_pool = v_pool.contiguous()
    offsets = offsets.to(torch.int64).contiguous()
    lengths = lengths.to(torch.int32).contiguous()
    out = torch.empty_like(q)
    weights = torch.zeros(k_pool.shape[0], group, dtype=torch.float32, device=q.device)
    if n_seg == 0:
        return out, weights
    if max_len is None:
        max_len = int(lengths.max())
    block_n = block_n or (16 if q.device.type == "cpu" else 64)
    splits = num_splits or plan_splits(max_len)
    if splits & (splits - 1):
        raise ValueError(f"num_splits must be a power of two, got {splits}")
    chunk = max(block_n, -(-max(max_len, 1) // splits))
    chunk = -(-chunk // block_n) * block_n
    block_g = max(16, _pow2(group))
    block_d = max(16, _pow2(dim))
    m = torch.empty(n_seg, splits, block_g, dtype=torch.float32, device=q.device)
    ell = torch.empty_like(m)
    acc = torch.empty(n_seg, splits, block_g, block_d, dtype=torch.float32, device=q.device)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    grid = (n_seg, splits)
    _split_kernel[grid](
        q,
        k_pool,
        v_pool,
        offsets,
        lengths,
        weights,
        m,
        ell,
        acc,
        float(scale),
        group,
        dim,
        k_pool.stride(0),
        v_pool.stride(0),
        chunk,
        NUM_SPLITS=splits,
        BLOCK_G=block_g,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        PRECISION=precision,
    )
    _merge_kernel[grid](
        out,
        offsets,
        lengths,
        weights,
        m,
        ell,
        acc,
        group,
        dim,
        chunk,
        NUM_SPLITS=splits,
        BLOCK_G=block_g,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
    )
    return out, weights
