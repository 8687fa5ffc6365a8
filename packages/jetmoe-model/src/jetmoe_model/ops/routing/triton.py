# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Triton routing: top-k softmax gates and the stable expert sort of the ``T * k`` pairs in one
launch (two above one token block), with the gates' backward in one more.

- ``_route_topk``: one program per block of tokens: the top-k logits (ties: lowest expert id,
  like a stable sort), their softmax in fp32, and the block's pair count per expert; with a
  single block it also finishes the sort (decode sizes: one launch for the whole routing).
- ``_route_sort``: one program per block: the expert offsets from all blocks' counts, then each
  pair's sorted position = its expert's start + the pairs of that expert in earlier blocks + its
  rank among the block's pairs of that expert (a cumulative sum over the block). Writes
  ``sorted_pair`` and its inverse ``pair_position`` (the sorted row of each pair), so later
  passes can write straight into sorted order.
- ``_route_bwd``: ``d logits`` of the top-k softmax (recomputed in fp32 from the logits),
  zero outside each token's k experts.

No host sync; ``torch.sort`` + ``searchsorted`` + ``topk`` + ``softmax`` take ~10 launches.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import triton_interpreting

from ...routing import Routing, TopKRouting


@triton.jit
def _top_k(logits_ptr, t, t_ok, E, stride_t, K: tl.constexpr, BLOCK_T: tl.constexpr,
           E_P2: tl.constexpr, K_P2: tl.constexpr):  # fmt: skip
    """``(values, experts)`` ``[BLOCK_T, K_P2]`` of each token's k largest logits, descending."""
    e = tl.arange(0, E_P2)
    j = tl.arange(0, K_P2)
    lg = tl.load(
        logits_ptr + t.to(tl.int64)[:, None] * stride_t + e[None, :],
        mask=t_ok[:, None] & (e[None, :] < E),
        other=float("-inf"),
    ).to(tl.float32)
    free = (e < E)[None, :] & t_ok[:, None]  # experts not taken yet
    top_v = tl.full((BLOCK_T, K_P2), float("-inf"), tl.float32)
    top_i = tl.zeros((BLOCK_T, K_P2), tl.int32)
    for s in tl.static_range(K):
        avail = free & (lg == lg)  # NaN logits are never picked before real ones
        best = tl.max(tl.where(avail, lg, float("-inf")), axis=1)
        idx = tl.min(tl.where(avail & (lg == best[:, None]), e[None, :], E_P2), axis=1)
        # nothing comparable left (NaN rows): the lowest free expert, so the k stay distinct
        idx = tl.where(idx < E_P2, idx, tl.min(tl.where(free, e[None, :], E_P2), axis=1))
        idx = tl.minimum(idx, E - 1)  # padding rows (masked later) stay in range
        val = tl.sum(tl.where(e[None, :] == idx[:, None], lg, 0.0), axis=1)
        top_v = tl.where(j[None, :] == s, val[:, None], top_v)
        top_i = tl.where(j[None, :] == s, idx[:, None], top_i)
        free = free & (e[None, :] != idx[:, None])
    return top_v, top_i


@triton.jit
def _place(pe, pid, base, sorted_ptr, pos_ptr, E, E_P2: tl.constexpr):
    """Sorted row of each pair of a block: ``base[e]`` (rows of expert e before this block) + its
    rank among the block's pairs of e (pairs in pair order: the sort is stable)."""
    e = tl.arange(0, E_P2)
    onehot = (pe[:, None] == e[None, :]).to(tl.int32)
    rank = tl.cumsum(onehot, 0) - onehot
    dest = tl.sum(onehot * (base[None, :] + rank), axis=1)
    ok = pe < E
    tl.store(sorted_ptr + dest, pid.to(tl.int64), mask=ok)
    tl.store(pos_ptr + pid, dest, mask=ok)


@triton.jit
def _route_topk(
    logits_ptr,
    gates_ptr,
    index_ptr,
    counts_ptr,
    sorted_ptr,
    pos_ptr,
    offs_ptr,
    T,
    E,
    stride_t,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    E_P2: tl.constexpr,
    K_P2: tl.constexpr,
    ONE_BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    t = b * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = t < T
    e = tl.arange(0, E_P2)
    j = tl.arange(0, K_P2)
    top_v, top_i = _top_k(logits_ptr, t, t_ok, E, stride_t, K, BLOCK_T, E_P2, K_P2)
    pair_ok = t_ok[:, None] & (j[None, :] < K)
    top_v = tl.where(pair_ok, top_v, 0.0)  # padding rows/slots: no -inf - -inf
    p = tl.where(pair_ok, tl.exp(top_v - tl.max(top_v, axis=1)[:, None]), 0.0)
    gates = p / tl.maximum(tl.sum(p, axis=1), 1e-30)[:, None]  # padding rows: 0, not 0/0
    pair = t[:, None] * K + j[None, :]
    tl.store(gates_ptr + pair, gates.to(gates_ptr.dtype.element_ty), mask=pair_ok)
    tl.store(index_ptr + pair, top_i.to(tl.int64), mask=pair_ok)
    # flat pair list of the block: expert (E_P2 for padding) and pair id, in pair order
    pe = tl.reshape(tl.where(pair_ok, top_i, E_P2), (BLOCK_T * K_P2,))
    pid = tl.reshape(pair, (BLOCK_T * K_P2,))
    counts = tl.sum((pe[:, None] == e[None, :]).to(tl.int32), axis=0)
    if ONE_BLOCK:  # the whole routing in this launch
        ends = tl.cumsum(counts, 0)
        tl.store(offs_ptr + e, ends, mask=e < E)
        _place(pe, pid, ends - counts, sorted_ptr, pos_ptr, E, E_P2)
    else:
        tl.store(counts_ptr + b * E_P2 + e, counts)


@triton.jit
def _route_sort(
    index_ptr,
    counts_ptr,
    sorted_ptr,
    pos_ptr,
    offs_ptr,
    T,
    E,
    NB,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    E_P2: tl.constexpr,
    K_P2: tl.constexpr,
    NB_P2: tl.constexpr,
):
    b = tl.program_id(0)
    e = tl.arange(0, E_P2)
    j = tl.arange(0, K_P2)
    blk = tl.arange(0, NB_P2)
    c = tl.load(counts_ptr + blk[:, None] * E_P2 + e[None, :], mask=blk[:, None] < NB, other=0)
    totals = tl.sum(c, axis=0)
    ends = tl.cumsum(totals, 0)
    if b == 0:
        tl.store(offs_ptr + e, ends, mask=e < E)
    base = ends - totals + tl.sum(tl.where(blk[:, None] < b, c, 0), axis=0)
    t = b * BLOCK_T + tl.arange(0, BLOCK_T)
    pair_ok = (t < T)[:, None] & (j[None, :] < K)
    pair = t[:, None] * K + j[None, :]
    idx = tl.load(index_ptr + pair, mask=pair_ok, other=E_P2).to(tl.int32)
    pe = tl.reshape(tl.where(pair_ok, idx, E_P2), (BLOCK_T * K_P2,))
    pid = tl.reshape(pair, (BLOCK_T * K_P2,))
    _place(pe, pid, base, sorted_ptr, pos_ptr, E, E_P2)


@triton.jit
def _route_bwd(
    logits_ptr,
    index_ptr,
    dgates_ptr,
    dlogits_ptr,
    T,
    E,
    stride_t,
    stride_dt,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    E_P2: tl.constexpr,
    K_P2: tl.constexpr,
):
    """``dlogits[t, e_j] = g_j (dg_j - sum_i g_i dg_i)`` for the k chosen experts, 0 elsewhere."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = t < T
    e = tl.arange(0, E_P2)
    j = tl.arange(0, K_P2)
    pair_ok = t_ok[:, None] & (j[None, :] < K)
    pair = t[:, None] * K + j[None, :]
    idx = tl.load(index_ptr + pair, mask=pair_ok, other=0)
    v = tl.load(logits_ptr + t.to(tl.int64)[:, None] * stride_t + idx, mask=pair_ok, other=0.0)
    v = v.to(tl.float32)
    p = tl.where(pair_ok, tl.exp(v - tl.max(tl.where(pair_ok, v, float("-inf")), 1)[:, None]), 0.0)
    g = p / tl.maximum(tl.sum(p, axis=1), 1e-30)[:, None]
    dg = tl.load(dgates_ptr + pair, mask=pair_ok, other=0.0).to(tl.float32)
    d = g * (dg - tl.sum(g * dg, axis=1)[:, None])
    dl = tl.zeros((BLOCK_T, E_P2), tl.float32)
    for s in tl.static_range(K):
        col = tl.sum(tl.where(j[None, :] == s, idx, 0), axis=1)
        val = tl.sum(tl.where(j[None, :] == s, d, 0.0), axis=1)
        dl += tl.where(e[None, :] == col[:, None], val[:, None], 0.0)
    tl.store(
        dlogits_ptr + t.to(tl.int64)[:, None] * stride_dt + e[None, :],
        dl.to(dlogits_ptr.dtype.element_ty),
        mask=t_ok[:, None] & (e[None, :] < E),
    )


def _block_t(tokens: int) -> int:
    """Tokens per program: one block up to 64 tokens (decode: one launch), then blocks sized so
    that there are at most ~128 of them (the sort program reads all blocks' counts)."""
    if triton_interpreting():
        return 8  # several blocks even at test sizes
    if tokens <= 64:
        return max(16, triton.next_power_of_2(tokens))
    return min(1024, max(64, triton.next_power_of_2(triton.cdiv(tokens, 128))))


def _warps(block_t: int) -> int:
    return 1 if triton_interpreting() else (8 if block_t >= 512 else 4)


def route_forward(logits: torch.Tensor, top_k: int, gate_dtype: torch.dtype):
    """``(gates [T, k], expert_index [T, k] int64, sorted_pair [T * k] int64,
    expert_offsets [E] int32, pair_position [T * k] int32)``; ``logits`` [T, E], rows contiguous."""
    tokens, experts = logits.shape
    dev = logits.device
    pairs = tokens * top_k
    gates = torch.empty(tokens, top_k, device=dev, dtype=gate_dtype)
    index = torch.empty(tokens, top_k, device=dev, dtype=torch.int64)
    sorted_pair = torch.empty(pairs, device=dev, dtype=torch.int64)
    pos = torch.empty(pairs, device=dev, dtype=torch.int32)
    offsets = torch.empty(experts, device=dev, dtype=torch.int32)
    if tokens == 0:
        return gates, index, sorted_pair, offsets.zero_(), pos
    bt = _block_t(tokens)
    nb = triton.cdiv(tokens, bt)
    e_p2, k_p2 = triton.next_power_of_2(experts), triton.next_power_of_2(top_k)
    counts = torch.empty(nb, e_p2, device=dev, dtype=torch.int32) if nb > 1 else offsets
    _route_topk[(nb,)](
        logits, gates, index, counts, sorted_pair, pos, offsets, tokens, experts,
        logits.stride(0), K=top_k, BLOCK_T=bt, E_P2=e_p2, K_P2=k_p2, ONE_BLOCK=nb == 1,
        num_warps=_warps(bt),
    )  # fmt: skip
    if nb > 1:
        _route_sort[(nb,)](
            index, counts, sorted_pair, pos, offsets, tokens, experts, nb, K=top_k,
            BLOCK_T=bt, E_P2=e_p2, K_P2=k_p2, NB_P2=triton.next_power_of_2(nb),
            num_warps=_warps(bt),
        )  # fmt: skip
    return gates, index, sorted_pair, offsets, pos


class _Route(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, top_k, gate_dtype):
        gates, index, sorted_pair, offsets, pos = route_forward(logits, top_k, gate_dtype)
        ctx.save_for_backward(logits, index)
        ctx.mark_non_differentiable(index, sorted_pair, offsets, pos)
        return gates, index, sorted_pair, offsets, pos

    @staticmethod
    def backward(ctx, dgates, *_):
        logits, index = ctx.saved_tensors
        tokens, experts = logits.shape
        dlogits = torch.empty_like(logits)
        if tokens:
            bt = _block_t(tokens)
            _route_bwd[(triton.cdiv(tokens, bt),)](
                logits, index, dgates.contiguous(), dlogits, tokens, experts, logits.stride(0),
                dlogits.stride(0), K=index.shape[1], BLOCK_T=bt,
                E_P2=triton.next_power_of_2(experts), K_P2=triton.next_power_of_2(index.shape[1]),
                num_warps=_warps(bt),
            )  # fmt: skip
        return dlogits, None, None


def top_k_route(logits: torch.Tensor, top_k: int, gate_dtype: torch.dtype) -> TopKRouting:
    """``jetmoe_model.routing.top_k_route`` in 1-2 launches, plus ``Routing.pair_position``."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [tokens, experts], got shape {tuple(logits.shape)}")
    experts = logits.shape[1]
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k={top_k} must be between 1 and the number of experts ({experts})")
    logits = logits.float().contiguous()
    if torch.is_grad_enabled() and logits.requires_grad:
        gates, index, sorted_pair, offsets, pos = _Route.apply(logits, top_k, gate_dtype)
    else:  # inference: no autograd node
        gates, index, sorted_pair, offsets, pos = route_forward(logits, top_k, gate_dtype)
    return TopKRouting(logits, gates, index, Routing(sorted_pair, offsets, top_k, experts, pos))


__all__ = ["aot_launches", "route_forward", "top_k_route"]


AOT_ROUTERS = ((8, 2),)  # (experts, top_k) of the released JetMoE-8B routers (MoA and MoE)
_GATE_TYPES = ("fp32", "fp16", "bf16")


def aot_launches():
    """Every configuration the routing launches with on the GPU for ``AOT_ROUTERS``: each token
    block size ``_block_t`` picks (16-64 tokens in one block, then 64-1024-token blocks; warps
    by block), each gate dtype, the single-block (sort fused) and multi-block forms, the sort
    over every power-of-two block count up to 128, and the gates' backward."""
    from tensor_utils.ops import KernelLaunch

    blocks = [16, 32, 64, 128, 256, 512, 1024]
    for experts, top_k in AOT_ROUTERS:
        shape = {"K": top_k, "E_P2": triton.next_power_of_2(experts)}
        shape["K_P2"] = triton.next_power_of_2(top_k)
        for bt in blocks:
            warps = 8 if bt >= 512 else 4
            for gate in _GATE_TYPES:
                for one_block in (True, False) if bt == 64 else (bt < 64,):
                    signature = {
                        "logits_ptr": "*fp32",
                        "gates_ptr": f"*{gate}",
                        "index_ptr": "*i64",
                        "counts_ptr": "*i32",
                        "sorted_ptr": "*i64",
                        "pos_ptr": "*i32",
                        "offs_ptr": "*i32",
                        **dict.fromkeys(("T", "E", "stride_t"), "i32"),
                    }
                    yield KernelLaunch(
                        _route_topk,
                        signature,
                        {**shape, "BLOCK_T": bt, "ONE_BLOCK": one_block},
                        num_warps=warps,
                        label=f"topk E={experts} k={top_k} BLOCK_T={bt} {gate} one={one_block}",
                    )
                signature = {
                    "logits_ptr": "*fp32",
                    "index_ptr": "*i64",
                    "dgates_ptr": f"*{gate}",
                    "dlogits_ptr": "*fp32",
                    **dict.fromkeys(("T", "E", "stride_t", "stride_dt"), "i32"),
                }
                yield KernelLaunch(
                    _route_bwd,
                    signature,
                    {**shape, "BLOCK_T": bt},
                    num_warps=warps,
                    label=f"route bwd E={experts} k={top_k} BLOCK_T={bt} {gate}",
                )
            if bt < 64:
                continue
            for nb_p2 in (2, 4, 8, 16, 32, 64, 128):
                signature = {
                    "index_ptr": "*i64",
                    "counts_ptr": "*i32",
                    "sorted_ptr": "*i64",
                    "pos_ptr": "*i32",
                    "offs_ptr": "*i32",
                    **dict.fromkeys(("T", "E", "NB"), "i32"),
                }
                yield KernelLaunch(
                    _route_sort,
                    signature,
                    {**shape, "BLOCK_T": bt, "NB_P2": nb_p2},
                    num_warps=warps,
                    label=f"sort E={experts} k={top_k} BLOCK_T={bt} NB_P2={nb_p2}",
                )
