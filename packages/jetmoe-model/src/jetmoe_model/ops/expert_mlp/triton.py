# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Triton backend of the SwiGLU expert MLP, built on the expert-linear kernels
(``ops/experts/triton.py``), and the MoE layer after routing:

- ``swiglu_mlp``: forward = one GEMM with the GLU epilogue (``silu(g) * u`` written in sorted
  order, the pre-activation ``h`` kept only when a gradient is needed) + one GEMM that scatters
  to pair order; backward = the ``d(act)`` GEMM whose epilogue writes ``dh`` from ``h`` (above
  ``KernelOptions.dh_split_min_pairs``: a plain ``d(act)`` GEMM and one elementwise pass, which runs at full
  bandwidth where the epilogue stalls), ``dW_out``, ``dx``, ``dW_in``; ``dy`` and ``x`` are
  gathered into sorted order once so every backward GEMM reads contiguous rows (TMA).
- ``combine``: the gate-weighted sum of each token's k expert outputs + bias in one pass, with
  its backward (``dy_pairs``, ``dgates``) in one more.
- ``routed_swiglu_moe`` (the ``triton`` backend of ``jetmoe_model::moe_layer``, what the model
  runs): the MoE layer after the router matmul as one autograd node: the routing kernels
  (``ops/routing``), GLU GEMM (GEMV for a handful of pairs), second GEMM, combine; its backward
  writes the combine's gradient straight into sorted order and folds the routing's backward
  into the combine's backward kernel (no routing node, no ``dgates``). Inference: 4-5 launches
  after the router matmul, no host sync, so it captures in a CUDA graph. (The same node after a
  separate routing node, measured against it, is ``benchmarks/unfused_moe.py``.)

Thresholds come from ``jetmoe_model.ops.options.kernel_options()``, read once per call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import triton_interpreting

from ..experts.naive import check_args
from ..experts.triton import gather_gemm_scatter, grouped_xty, swiglu_grad
from ..options import KernelOptions, kernel_options


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
    pos_ptr,
    logits_ptr,
    index_ptr,
    N,
    E,
    stride_lt,
    K: tl.constexpr,
    K_P2: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_LOGITS: tl.constexpr,
):
    """``dy[t * K + j] = gates[t, j] * dout[t]``, ``dgates[t, j] = <dout[t], y[t * K + j]>``;
    with ``pos``, ``dy`` row ``pos[t * K + j]`` instead (the next GEMMs read sorted rows). With
    ``logits`` the routing's backward too: ``dgates_ptr`` receives ``d logits`` ``[T, E]`` of the
    top-k softmax (recomputed in fp32 from the logits), zero outside the token's k experts."""
    t = tl.program_id(0)
    j = tl.arange(0, K_P2)
    dg = tl.zeros((K_P2,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        mask = offs < N
        d = tl.load(dout_ptr + t.to(tl.int64) * N + offs, mask=mask, other=0.0).to(tl.float32)
        for s in tl.static_range(K):
            row = (t * K + s).to(tl.int64) * N
            if HAS_POS:  # noqa: SIM108 (constexpr branch)
                out_row = tl.load(pos_ptr + t * K + s).to(tl.int64) * N
            else:
                out_row = row
            g = tl.load(gates_ptr + t * K + s).to(tl.float32)
            yv = tl.load(y_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
            dg += tl.where(j == s, tl.sum(d * yv, axis=0), 0.0)
            tl.store(dy_ptr + out_row + offs, (g * d).to(dy_ptr.dtype.element_ty), mask=mask)
    if HAS_LOGITS:  # dlogits[t, e_j] = p_j (dg_j - sum_i p_i dg_i), p = softmax of the k logits
        jm = j < K
        idx = tl.load(index_ptr + t * K + j, mask=jm, other=0).to(tl.int32)
        v = tl.load(logits_ptr + t.to(tl.int64) * stride_lt + idx, mask=jm, other=0.0)
        v = v.to(tl.float32)
        p = tl.where(jm, tl.exp(v - tl.max(tl.where(jm, v, float("-inf")), axis=0)), 0.0)
        p = p / tl.maximum(tl.sum(p, axis=0), 1e-30)
        dl = p * (dg - tl.sum(p * dg, axis=0))
        e = tl.arange(0, E_P2)
        hit = (e[:, None] == idx[None, :]) & jm[None, :]
        row_dl = tl.sum(tl.where(hit, dl[None, :], 0.0), axis=1)
        tl.store(
            dgates_ptr + t.to(tl.int64) * stride_lt + e,
            row_dl.to(dgates_ptr.dtype.element_ty),
            mask=e < E,
        )
    else:
        tl.store(dgates_ptr + t * K + j, dg, mask=j < K)


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


def _combine_bwd_launch(dout, y_pairs, gates, pos, logits=None, index=None):
    """``(dy, dgates)`` of the combine; ``dy`` in sorted order when ``pos`` is given. With
    ``logits`` (and the routing's ``index``): ``(dy, dlogits)``, the routing's backward folded in
    (the gates are then the top-k softmax of ``logits``)."""
    tokens, top_k = gates.shape
    n = y_pairs.shape[1]
    dout = dout.contiguous()
    dy = torch.empty_like(y_pairs)
    if logits is None:
        dg = torch.empty(tokens, top_k, device=gates.device, dtype=torch.float32)
    else:
        dg = torch.empty(logits.shape, device=logits.device, dtype=logits.dtype)
    if tokens and n:
        block = 16 if triton_interpreting() else 1024
        experts = 1 if logits is None else logits.shape[1]
        _combine_bwd[(tokens,)](
            dout, y_pairs, gates, dy, dg, gates if pos is None else pos,
            gates if logits is None else logits, gates if index is None else index,
            n, experts, 0 if logits is None else logits.stride(0), K=top_k,
            K_P2=triton.next_power_of_2(top_k), E_P2=triton.next_power_of_2(experts),
            BLOCK_N=block, HAS_POS=pos is not None, HAS_LOGITS=logits is not None,
            num_warps=1 if triton_interpreting() else 4,
        )  # fmt: skip
    else:  # no tokens or no columns: every dot product is empty (dlogits = p (0 - 0) = 0)
        dg.zero_()
    return dy, dg if logits is not None else dg.to(gates.dtype)


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_pairs, gates, bias):
        y_pairs, gates = y_pairs.contiguous(), gates.contiguous()
        ctx.save_for_backward(y_pairs, gates)
        return _combine_fwd(y_pairs, gates, bias)

    @staticmethod
    def backward(ctx, dout):
        y_pairs, gates = ctx.saved_tensors
        dy, dgates = _combine_bwd_launch(dout, y_pairs, gates, None)
        dbias = dout.sum(0) if ctx.needs_input_grad[2] else None
        return dy, dgates, dbias


def combine(y_pairs: torch.Tensor, gates: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``out[t] = bias + sum_j gates[t, j] * y_pairs[t * k + j]``, differentiable in all three."""
    return _Combine.apply(y_pairs, gates, bias)


@triton.jit
def _swiglu_bwd(d_act_ptr, h_ptr, dh_ptr, rows, N, BLOCK: tl.constexpr):
    """``dh[r] = [dg, du]`` from ``d(act)[r]`` and ``h[r] = [g, u]`` (all row-major)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < rows.to(tl.int64) * N  # int64: P * F can pass 2**31
    r, c = offs // N, offs % N
    d_act = tl.load(d_act_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(h_ptr + r * 2 * N + c, mask=mask, other=0.0)
    u = tl.load(h_ptr + r * 2 * N + N + c, mask=mask, other=0.0)
    dg, du = swiglu_grad(d_act, g, u)
    tl.store(dh_ptr + r * 2 * N + c, dg.to(dh_ptr.dtype.element_ty), mask=mask)
    tl.store(dh_ptr + r * 2 * N + N + c, du.to(dh_ptr.dtype.element_ty), mask=mask)


def swiglu_backward(d_act: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``dh = [dg, du]`` ``[P, 2F]`` of ``act = silu(g) * u`` from ``d(act)`` ``[P, F]`` and the
    pre-activation ``h = [g, u]`` ``[P, 2F]`` (one memory pass)."""
    rows, n = d_act.shape
    dh = torch.empty_like(h)
    if rows and n:
        block = 64 if triton_interpreting() else 2048
        _swiglu_bwd[(triton.cdiv(rows * n, block),)](
            d_act, h, dh, rows, n, BLOCK=block, num_warps=1 if triton_interpreting() else 8
        )
    return dh


def _dh(dy_s, w_out, offsets, h, pairs, opts: KernelOptions | None = None):
    """``dh = [dg, du]`` of the SwiGLU, sorted rows, from ``d(act) = dy_e W_out_e`` and the saved
    pre-activation ``h``: in the GEMM's epilogue, or (above ``dh_split_min_pairs``) in a
    separate elementwise pass (that epilogue's h loads / dh stores stall one program per SM, the
    separate pass runs at full bandwidth; below it, one launch less wins)."""
    opts = opts or kernel_options()
    bwd = dict(transpose_weight=True, allow_gemv=False, opts=opts)
    if pairs > opts.dh_split_min_pairs:
        d_act, _ = gather_gemm_scatter(dy_s, w_out, offsets, None, 1, None, pairs, **bwd)
        return swiglu_backward(d_act, h)
    dh, _ = gather_gemm_scatter(dy_s, w_out, offsets, None, 1, None, pairs, epilogue="glu_bwd",
                                h=h, **bwd)  # fmt: skip
    return dh


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
        dh = _dh(dy_s, w_out, offsets, h, pairs)
        dx = dw_in = dw_out = None
        if ctx.needs_input_grad[2]:
            dw_out = grouped_xty(act, dy_s, offsets, None, 1, None, w_out.shape, pairs)
        if ctx.needs_input_grad[0]:
            dx, _ = gather_gemm_scatter(dh, w_in, offsets, None, 1, sorted_pair, pairs, **bwd)
            if k > 1:
                dx = dx.view(x.shape[0], k, x.shape[1]).sum(1)
        if ctx.needs_input_grad[1]:
            dw_in = _dw_in(x, None, dh, w_in, sorted_pair, offsets, k)
        return dx, dw_in, dw_out, None, None, None, None


def swiglu_mlp(x, w_in, w_out, sorted_pair, expert_offsets):
    """Fused SwiGLU expert MLP (see ``jetmoe_model.ops.expert_mlp``), token-order input."""
    k = check_args(x, w_in, sorted_pair, expert_offsets, "token", "sorted")
    # h (the pre-activation) is kept only when autograd will call backward
    need_h = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w_in, w_out))
    return _ExpertSwiGLUMLP.apply(x, w_in, w_out, sorted_pair, expert_offsets, k, need_h)


def _moe_forward(x, x_s, w_in, w_out, gates, bias, sorted_pair, offsets, k, need_h, opts=None):
    """GLU GEMM (+ h when ``need_h``), second GEMM scattered to pair order, combine."""
    pairs = sorted_pair.numel()
    glu = dict(epilogue="glu", save_h=need_h, opts=opts)
    if x_s is None:
        act, h = gather_gemm_scatter(x, w_in, offsets, sorted_pair, k, None, pairs, **glu)
    else:
        act, h = gather_gemm_scatter(x_s, w_in, offsets, None, 1, None, pairs, **glu)
    y, _ = gather_gemm_scatter(act, w_out, offsets, None, 1, sorted_pair, pairs, opts=opts)
    return act, h, y, _combine_fwd(y, gates, bias)


def _sorted_x(x, sorted_pair, k, opts: KernelOptions):
    """x gathered into sorted order once (above ``gather_x_min_pairs``: the GLU GEMM's A tile
    then loads through TMA too, and dW_in reuses the copy), else None."""
    if sorted_pair.numel() > opts.gather_x_min_pairs:
        return x.index_select(0, sorted_pair // k)
    return None


def _dw_in(x, x_s, dh, w_in, sorted_pair, offsets, k, opts: KernelOptions | None = None):
    """``dW_in`` from the sorted copy of x (kept by the forward above ``gather_x_min_pairs``, or
    made here where TMA pays), else gathering x's rows inside the kernel: at small sizes the two
    extra launches (``// k``, ``index_select``) cost more host time than the gather costs on the
    GPU."""
    opts = opts or kernel_options()
    pairs = sorted_pair.numel()
    if x_s is None and pairs > opts.tma_min_pairs:
        x_s = x.index_select(0, sorted_pair // k)
    if x_s is not None:
        return grouped_xty(x_s, dh, offsets, None, 1, None, w_in.shape, pairs)
    return grouped_xty(x, dh, offsets, sorted_pair, k, None, w_in.shape, pairs)


class _SwiGLUMoE(torch.autograd.Function):
    """The MoE layer after routing: ``out[t] = bias + sum_j gates[t, j] y[t * k + j]``, ``y`` =
    the SwiGLU expert MLP. One autograd node, so its backward writes the combine's gradient
    straight into sorted order (``pair_position``) for the dh / dW_out GEMMs. With ``logits``
    (``routed_swiglu_moe``) the gates are the routing's top-k softmax of ``logits`` and the node
    returns ``d logits`` from the combine's backward kernel (no routing node, no ``dgates``)."""

    @staticmethod
    def forward(ctx, x, w_in, w_out, gates, bias, logits, index, sorted_pair, offsets, pos, k):
        opts = kernel_options()  # one set of options for the forward and its backward
        gates = gates.contiguous()
        x_s = _sorted_x(x, sorted_pair, k, opts)
        act, h, y, out = _moe_forward(
            x, x_s, w_in, w_out, gates, bias, sorted_pair, offsets, k, True, opts
        )
        ctx.save_for_backward(x if x_s is None else x_s, w_in, w_out, h, act, y, gates,
                              sorted_pair, offsets, pos, logits, index)  # fmt: skip
        ctx.k, ctx.x_sorted, ctx.x_shape, ctx.opts = k, x_s is not None, x.shape, opts
        return out

    @staticmethod
    def backward(ctx, dout):
        x_or_s, w_in, w_out, h, act, y, gates, sorted_pair, offsets, pos, logits, index = (
            ctx.saved_tensors
        )
        k, pairs, opts = ctx.k, sorted_pair.numel(), ctx.opts
        need = ctx.needs_input_grad
        fused_route = logits is not None
        dy_s, dg = _combine_bwd_launch(
            dout, y, gates, pos, logits if fused_route else None, index if fused_route else None
        )
        dbias = dout.sum(0) if need[4] else None
        dh = _dh(dy_s, w_out, offsets, h, pairs, opts)
        dx = dw_in = dw_out = None
        if need[2]:
            dw_out = grouped_xty(act, dy_s, offsets, None, 1, None, w_out.shape, pairs, opts)
        if need[0]:
            bwd = dict(transpose_weight=True, allow_gemv=False, opts=opts)
            dx, _ = gather_gemm_scatter(dh, w_in, offsets, None, 1, sorted_pair, pairs, **bwd)
            if k > 1:
                dx = dx.view(ctx.x_shape[0], k, ctx.x_shape[1]).sum(1)
        if need[1]:
            x, x_s = (None, x_or_s) if ctx.x_sorted else (x_or_s, None)
            dw_in = _dw_in(x, x_s, dh, w_in, sorted_pair, offsets, k, opts)
        dgates = dg if need[3] and not fused_route else None
        dlogits = dg if need[5] and fused_route else None
        return (dx, dw_in, dw_out, dgates, dbias, dlogits) + (None,) * 5


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def routed_swiglu_moe(x, logits, w_in, w_out, bias, top_k):
    """The whole MoE layer after the router matmul: Triton routing (``ops/routing``) of
    ``logits`` ``[T, E]`` (any float dtype; the top-k softmax runs in fp32), then the fused SwiGLU
    experts + combine + bias. Returns ``(out [T, D], TopKRouting)``; the routing's ``logits`` is
    the tensor passed in (its gradient comes from this node and from any auxiliary loss), its
    gates carry no gradient of their own (this node differentiates through the logits: the
    routing's backward is folded into the combine's, so training adds no routing launches)."""
    from ...routing import Routing, TopKRouting
    from ..routing.triton import route_forward

    if logits.dim() != 2 or x.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            f"logits must be [tokens, experts] for x [tokens, hidden], got {tuple(logits.shape)} "
            f"and {tuple(x.shape)}"
        )
    experts = logits.shape[1]
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k={top_k} must be between 1 and the number of experts ({experts})")
    logits = logits.contiguous()
    gates, index, sorted_pair, offsets, pos = route_forward(logits.detach(), top_k, x.dtype)
    route = TopKRouting(logits, gates, index, Routing(sorted_pair, offsets, top_k, experts, pos))
    k = check_args(x, w_in, sorted_pair, offsets, "token", "sorted")
    if _needs_grad(x, w_in, w_out, bias, logits):
        out = _SwiGLUMoE.apply(
            x, w_in, w_out, gates, bias, logits, index, sorted_pair, offsets, pos, k
        )
    else:
        opts = kernel_options()
        x_s = _sorted_x(x, sorted_pair, k, opts)
        out = _moe_forward(x, x_s, w_in, w_out, gates, bias, sorted_pair, offsets, k, False, opts)[
            3
        ]
    return out, route


__all__ = [
    "aot_launches",
    "combine",
    "routed_swiglu_moe",
    "swiglu_backward",
    "swiglu_mlp",
]


def aot_launches():
    """Every configuration of this module's own kernels on the GPU (the GEMMs are the expert
    linear's, ``ops/experts/triton.py``), for the released routers (top 2 of 8 experts): the
    combine and its backward (plain, and with the sorted ``dy`` and folded routing backward of
    the fused layer) and the elementwise SwiGLU backward, in each dtype."""
    from tensor_utils.ops import KernelLaunch

    from ..experts.triton import _AOT_TYPES, AOT_EXPERTS

    top_k = 2
    for t in _AOT_TYPES.values():
        signature = {"y_ptr": f"*{t}", "gates_ptr": f"*{t}", "bias_ptr": f"*{t}"}
        signature.update(out_ptr=f"*{t}", N="i32")
        yield KernelLaunch(_combine, signature, {"K": top_k, "BLOCK_N": 1024}, label=f"combine {t}")
        for fused in (True, False):
            signature = {
                "dout_ptr": f"*{t}",
                "y_ptr": f"*{t}",
                "gates_ptr": f"*{t}",
                "dy_ptr": f"*{t}",
                "dgates_ptr": f"*{t}" if fused else "*fp32",
                "pos_ptr": "*i32" if fused else f"*{t}",
                "logits_ptr": f"*{t}",
                "index_ptr": "*i64" if fused else f"*{t}",
                **dict.fromkeys(("N", "E", "stride_lt"), "i32"),
            }
            constexprs = {
                "K": top_k,
                "K_P2": top_k,
                "E_P2": AOT_EXPERTS if fused else 1,
                "BLOCK_N": 1024,
                "HAS_POS": fused,
                "HAS_LOGITS": fused,
            }
            yield KernelLaunch(
                _combine_bwd, signature, constexprs, label=f"combine bwd {t} fused={fused}"
            )
        signature = {"d_act_ptr": f"*{t}", "h_ptr": f"*{t}", "dh_ptr": f"*{t}"}
        signature.update(rows="i32", N="i32")
        yield KernelLaunch(
            _swiglu_bwd, signature, {"BLOCK": 2048}, num_warps=8, label=f"swiglu bwd {t}"
        )
