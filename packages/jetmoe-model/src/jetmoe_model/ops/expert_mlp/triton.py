"""Triton backend of the SwiGLU expert MLP, built on the expert-linear kernels
(``ops/experts/triton.py``), plus the small-batch (decode) layer path:

- ``swiglu_mlp``: forward = one GEMM with the GLU epilogue (``silu(g) * u`` written in sorted
  order, the pre-activation ``h`` kept only when a gradient is needed) + one GEMM that scatters
  to pair order; backward = the ``d(act)`` GEMM whose epilogue writes ``dh`` from ``h`` (the
  SwiGLU backward never makes its own pass), ``dW_out``, ``dx``, ``dW_in``; ``dy`` and ``x`` are
  gathered into sorted order once so every backward GEMM reads contiguous rows (TMA).
- ``combine``: the gate-weighted sum of each token's k expert outputs + bias in one pass, with
  its backward (``dy_pairs``, ``dgates``) in one more.
- ``small_batch_moe``: a whole inference MoE layer for a handful of tokens in 4 launches after
  the router matmul: ``_route_small`` (top-k softmax gates and the stable expert sort in one
  program), the GLU GEMM (GEMV for a few pairs), the second GEMM, ``_combine`` (gate-weighted
  sum + bias). No host sync, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.dispatch import triton_interpreting

from ..experts.naive import check_args
from ..experts.triton import gather_gemm_scatter, grouped_xty

# Pairs at or below this count (no autograd) take the small-batch layer path.
SMALL_BATCH_MAX_PAIRS = 64


@triton.jit
def _route_small(
    logits_ptr,
    gates_ptr,
    index_ptr,
    sorted_ptr,
    offs_ptr,
    T,
    E,
    K: tl.constexpr,
    T_P2: tl.constexpr,
    E_P2: tl.constexpr,
    K_P2: tl.constexpr,
):
    """One program: top-k softmax gates per token and the stable sort of the T * K pairs by
    expert (counting sort; a pair's rank in its expert = earlier pairs of that expert)."""
    t = tl.arange(0, T_P2)
    e = tl.arange(0, E_P2)
    j = tl.arange(0, K_P2)
    t_ok = t < T
    lg = tl.load(
        logits_ptr + t[:, None] * E + e[None, :],
        mask=t_ok[:, None] & (e[None, :] < E),
        other=float("-inf"),
    )
    top_v = tl.full((T_P2, K_P2), float("-inf"), tl.float32)
    top_i = tl.zeros((T_P2, K_P2), tl.int32)
    for s in tl.static_range(K):
        best = tl.max(lg, axis=1)
        # lowest expert id among the maxima (ties: like a stable sort)
        idx = tl.min(tl.where(lg == best[:, None], e[None, :], E_P2), axis=1)
        top_v = tl.where(j[None, :] == s, best[:, None], top_v)
        top_i = tl.where(j[None, :] == s, idx[:, None], top_i)
        lg = tl.where(e[None, :] == idx[:, None], float("-inf"), lg)
    pair_ok = t_ok[:, None] & (j[None, :] < K)
    top_v = tl.where(pair_ok, top_v, 0.0)  # padding rows/slots: no -inf - -inf
    p = tl.where(pair_ok, tl.exp(top_v - tl.max(top_v, axis=1)[:, None]), 0.0)
    gates = p / tl.maximum(tl.sum(p, axis=1), 1e-30)[:, None]  # padding rows: 0, not 0/0
    pair = t[:, None] * K + j[None, :]
    tl.store(gates_ptr + pair, gates.to(gates_ptr.dtype.element_ty), mask=pair_ok)
    tl.store(index_ptr + pair, top_i.to(tl.int64), mask=pair_ok)
    # flat pair lists: expert (E_P2 for padding) and pair id
    pe = tl.reshape(tl.where(pair_ok, top_i, E_P2), (T_P2 * K_P2,))
    pid = tl.reshape(pair, (T_P2 * K_P2,))
    counts = tl.sum((pe[:, None] == e[None, :]).to(tl.int32), axis=0)
    ends = tl.cumsum(counts, 0)
    tl.store(offs_ptr + e, ends, mask=e < E)
    starts = ends - counts
    same = (pe[:, None] == pe[None, :]) & (pid[None, :] < pid[:, None])
    rank = tl.sum(same.to(tl.int32), axis=1)
    start = tl.sum(tl.where(pe[:, None] == e[None, :], starts[None, :], 0), axis=1)
    tl.store(sorted_ptr + start + rank, pid.to(tl.int64), mask=pe < E)


@triton.jit
def _combine(
    y_ptr,
    gates_ptr,
    bias_ptr,
    out_ptr,
    N,
    K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``out[t] = bias + sum_j gates[t, j] * y[t * K + j]`` (the gate-weighted combine)."""
    t = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = offs < N
    acc = tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    for s in tl.static_range(K):
        g = tl.load(gates_ptr + t * K + s).to(tl.float32)
        yv = tl.load(y_ptr + (t * K + s).to(tl.int64) * N + offs, mask=mask, other=0.0)
        acc += g * yv.to(tl.float32)
    tl.store(out_ptr + t.to(tl.int64) * N + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _combine_bwd(
    dout_ptr,
    y_ptr,
    gates_ptr,
    dy_ptr,
    dgates_ptr,
    N,
    K: tl.constexpr,
    K_P2: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``dy[t * K + j] = gates[t, j] * dout[t]``, ``dgates[t, j] = <dout[t], y[t * K + j]>``."""
    t = tl.program_id(0)
    j = tl.arange(0, K_P2)
    dg = tl.zeros((K_P2,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        mask = offs < N
        d = tl.load(dout_ptr + t.to(tl.int64) * N + offs, mask=mask, other=0.0).to(tl.float32)
        for s in tl.static_range(K):
            row = (t * K + s).to(tl.int64) * N
            g = tl.load(gates_ptr + t * K + s).to(tl.float32)
            yv = tl.load(y_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
            dg += tl.where(j == s, tl.sum(d * yv, axis=0), 0.0)
            tl.store(dy_ptr + row + offs, (g * d).to(dy_ptr.dtype.element_ty), mask=mask)
    tl.store(dgates_ptr + t * K + j, dg, mask=j < K)


def route_small(logits: torch.Tensor, top_k: int, gate_dtype: torch.dtype):
    """Decode-size routing in one launch: ``(gates [T, k], expert_index [T, k] int64,
    sorted_pair [T * k] int64, expert_offsets [E] int32)``, as ``top_k_route`` +
    ``sort_by_expert`` give them (stable sort: pairs of an expert in pair order)."""
    tokens, experts = logits.shape
    dev = logits.device
    gates = torch.empty(tokens, top_k, device=dev, dtype=gate_dtype)
    index = torch.empty(tokens, top_k, device=dev, dtype=torch.int64)
    sorted_pair = torch.empty(tokens * top_k, device=dev, dtype=torch.int64)
    offsets = torch.empty(experts, device=dev, dtype=torch.int32)
    _route_small[(1,)](
        logits.contiguous(), gates, index, sorted_pair, offsets, tokens, experts,
        K=top_k, T_P2=triton.next_power_of_2(max(tokens, 1)),
        E_P2=triton.next_power_of_2(experts), K_P2=triton.next_power_of_2(top_k),
        num_warps=1 if triton_interpreting() else 4,
    )  # fmt: skip
    return gates, index, sorted_pair, offsets


def _combine_fwd(y_pairs: torch.Tensor, gates: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    tokens, top_k = gates.shape
    n = y_pairs.shape[1]
    out = torch.empty(tokens, n, device=y_pairs.device, dtype=y_pairs.dtype)
    if tokens == 0 or n == 0:
        return out
    block = 16 if triton_interpreting() else 1024
    _combine[(tokens, triton.cdiv(n, block))](
        y_pairs, gates, bias, out, n, K=top_k, BLOCK_N=block,
        num_warps=1 if triton_interpreting() else 4,
    )  # fmt: skip
    return out


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_pairs, gates, bias):
        y_pairs, gates = y_pairs.contiguous(), gates.contiguous()
        ctx.save_for_backward(y_pairs, gates)
        return _combine_fwd(y_pairs, gates, bias)

    @staticmethod
    def backward(ctx, dout):
        y_pairs, gates = ctx.saved_tensors
        tokens, top_k = gates.shape
        n = y_pairs.shape[1]
        dout = dout.contiguous()
        dy = torch.empty_like(y_pairs)
        dgates = torch.empty(tokens, top_k, device=gates.device, dtype=torch.float32)
        if tokens and n:
            block = 16 if triton_interpreting() else 1024
            _combine_bwd[(tokens,)](
                dout, y_pairs, gates, dy, dgates, n, K=top_k,
                K_P2=triton.next_power_of_2(top_k), BLOCK_N=block,
                num_warps=1 if triton_interpreting() else 4,
            )  # fmt: skip
        else:
            dgates.zero_()
        dbias = dout.sum(0) if ctx.needs_input_grad[2] else None
        return dy, dgates.to(gates.dtype), dbias


def combine(y_pairs: torch.Tensor, gates: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``out[t] = bias + sum_j gates[t, j] * y_pairs[t * k + j]``, differentiable in all three."""
    return _Combine.apply(y_pairs, gates, bias)


class _ExpertSwiGLUMLP(torch.autograd.Function):
    """``y[p] = W_out[e] (silu(g) * u)``, ``[g; u] = W_in[e] x[p // k]``, pair-order output.

    Forward: one GLU-epilogue GEMM (writes the activation in sorted order, plus ``h`` when a
    gradient is needed) and one GEMM with scatter. Backward: ``dh`` comes straight out of the
    ``d(act) = dy W_out`` GEMM's epilogue; then ``dW_out``, ``dx`` and ``dW_in``.
    """

    @staticmethod
    def forward(ctx, x, w_in, w_out, sorted_pair, offsets, k, need_h):
        pairs = sorted_pair.numel()
        act, h = gather_gemm_scatter(
            x, w_in, offsets, sorted_pair, k, None, pairs, epilogue="glu", save_h=need_h
        )
        y, _ = gather_gemm_scatter(act, w_out, offsets, None, 1, sorted_pair, pairs)
        ctx.save_for_backward(x, w_in, w_out, h, act, sorted_pair, offsets)
        ctx.k = k
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_in, w_out, h, act, sorted_pair, offsets = ctx.saved_tensors
        k, pairs = ctx.k, sorted_pair.numel()
        bwd = dict(transpose_weight=True, allow_gemv=False)
        # dy in sorted order (one gather pass): both dh and dW_out then read it through TMA
        dy_s = dy.index_select(0, sorted_pair)
        dh, _ = gather_gemm_scatter(
            dy_s, w_out, offsets, None, 1, None, pairs, epilogue="glu_bwd", h=h, **bwd
        )
        dx = dw_in = dw_out = None
        if ctx.needs_input_grad[2]:
            dw_out = grouped_xty(act, dy_s, offsets, None, 1, None, w_out.shape, pairs)
        if ctx.needs_input_grad[0]:
            dx, _ = gather_gemm_scatter(dh, w_in, offsets, None, 1, sorted_pair, pairs, **bwd)
            if k > 1:
                dx = dx.view(x.shape[0], k, x.shape[1]).sum(1)
        if ctx.needs_input_grad[1]:
            x_s = x.index_select(0, sorted_pair // k)  # sorted rows: TMA for dW_in as well
            dw_in = grouped_xty(x_s, dh, offsets, None, 1, None, w_in.shape, pairs)
        return dx, dw_in, dw_out, None, None, None, None


def swiglu_mlp(x, w_in, w_out, sorted_pair, expert_offsets):
    """Fused SwiGLU expert MLP (see ``jetmoe_model.ops.expert_mlp``), token-order input."""
    k = check_args(x, w_in, sorted_pair, expert_offsets, "token", "sorted")
    # h (the pre-activation) is kept only when autograd will call backward
    need_h = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w_in, w_out))
    return _ExpertSwiGLUMLP.apply(x, w_in, w_out, sorted_pair, expert_offsets, k, need_h)


def small_batch_moe(x, logits, w_in, w_out, bias, top_k):
    """Inference MoE layer for a handful of tokens in 4 launches after the router matmul:
    routing + sort, GLU GEMM (GEMV for <= DECODE_MAX_PAIRS pairs), GEMM + scatter, combine.
    Returns ``(out [T, D], gates, expert_index)``."""
    gates, index, sorted_pair, offsets = route_small(logits, top_k, x.dtype)
    pairs = sorted_pair.numel()
    act, _ = gather_gemm_scatter(x, w_in, offsets, sorted_pair, top_k, None, pairs, epilogue="glu")
    y, _ = gather_gemm_scatter(act, w_out, offsets, None, 1, sorted_pair, pairs)
    return _combine_fwd(y, gates.contiguous(), bias), gates, index


__all__ = ["SMALL_BATCH_MAX_PAIRS", "combine", "route_small", "small_batch_moe", "swiglu_mlp"]
