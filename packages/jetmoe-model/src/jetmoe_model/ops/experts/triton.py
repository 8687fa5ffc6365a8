"""Padding-free Triton kernels for the expert linear (forward and backward).

Three kernels, all reading the int32 ``expert_offsets`` on the device (no host sync):

- ``_gather_gemm_scatter``: ``y[dst(p)] = x[src(p)] @ W[e(p)]^T`` over the expert-sorted pairs.
  The grid is an upper bound on row tiles, ``cdiv(P, BLOCK_M) + E``; each program finds its
  expert and row range from the offsets inside the kernel (a cumulative sum over E tile counts),
  so a tile never straddles two experts and no row is padded or copied. Gather (the token row of
  each pair) happens on the A-tile load and scatter (back to pair order) on the store.
  The same kernel with W's strides swapped gives the input gradient ``dX = dY @ W``.
- ``_grouped_xty``: the weight gradient ``dW[e] = dY_e^T X_e``, one program per (expert, N tile,
  K tile) looping over that expert's rows; gathers on both operands; empty experts get zeros.
- ``_gemv``: the small-batch (decode) path, one program per (pair, N tile), a plain dot product
  per output without tensor-core tiles, for a handful of pairs.

Accumulation is fp32; fp32 inputs use IEEE products (exact enough for tight tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.dispatch import triton_interpreting

from .naive import check_args

# Pairs at or below this count take the GEMV decode path in the forward pass.
DECODE_MAX_PAIRS = 8
# Overrides for tuning sweeps: {"gemm": {...}, "xty": {...}, "gemv": {...}}.
CONFIG_OVERRIDES: dict[str, dict[str, int]] = {}


@triton.jit
def _tile_of(offs_ptr, E, pid_m, BLOCK_M: tl.constexpr, E_P2: tl.constexpr):
    """Expert and row range [row_start, row_end) of row tile ``pid_m`` (expert >= E: no tile)."""
    e_idx = tl.arange(0, E_P2)
    ends = tl.load(offs_ptr + e_idx, mask=e_idx < E, other=0).to(tl.int32)
    starts = tl.load(offs_ptr + e_idx - 1, mask=(e_idx > 0) & (e_idx < E), other=0).to(tl.int32)
    tiles = (ends - starts + BLOCK_M - 1) // BLOCK_M
    tile_end = tl.cumsum(tiles, 0)
    expert = tl.sum((tile_end <= pid_m).to(tl.int32), 0)
    sel = e_idx == expert
    tile_begin = tl.sum(tl.where(sel, tile_end - tiles, 0), 0)
    row_start = tl.sum(tl.where(sel, starts, 0), 0) + (pid_m - tile_begin) * BLOCK_M
    row_end = tl.sum(tl.where(sel, ends, 0), 0)
    return expert, row_start, row_end


@triton.jit
def _gather_gemm_scatter(
    x_ptr,
    w_ptr,
    y_ptr,
    offs_ptr,
    src_ptr,
    dst_ptr,
    N,
    K,
    E,
    SRC_DIV,
    num_m_tiles,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    HAS_SRC: tl.constexpr,
    HAS_DST: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m_tiles - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m

    expert, row_start, row_end = _tile_of(offs_ptr, E, pid_m, BLOCK_M, E_P2)
    rows = row_start + tl.arange(0, BLOCK_M)
    row_mask = rows < row_end
    if HAS_SRC:  # noqa: SIM108 (constexpr branch)
        src = tl.load(src_ptr + rows, mask=row_mask, other=0) // SRC_DIV
    else:
        src = rows
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + src.to(tl.int64)[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = (
        w_ptr
        + expert.to(tl.int64) * stride_we
        + offs_n[None, :] * stride_wn
        + offs_k[:, None] * stride_wk
    )
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_k = tl.where(expert < E, tl.cdiv(K, BLOCK_K), 0)
    for kk in range(0, n_k):
        k_left = K - kk * BLOCK_K
        a = tl.load(x_ptrs, mask=row_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if HAS_DST:  # noqa: SIM108 (constexpr branch)
        dst = tl.load(dst_ptr + rows, mask=row_mask, other=0)
    else:
        dst = rows
    y_ptrs = y_ptr + dst.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(
        y_ptrs,
        acc.to(y_ptr.dtype.element_ty),
        mask=row_mask[:, None] & (offs_n[None, :] < N),
    )


@triton.jit
def _grouped_xty(
    x_ptr,
    dy_ptr,
    dw_ptr,
    offs_ptr,
    xsrc_ptr,
    dysrc_ptr,
    N,
    K,
    X_DIV,
    stride_xm,
    stride_xk,
    stride_dm,
    stride_dn,
    stride_we,
    stride_wn,
    stride_wk,
    HAS_XSRC: tl.constexpr,
    HAS_DYSRC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    expert = tl.program_id(1)
    num_k = tl.cdiv(K, BLOCK_K)
    pid_n = pid // num_k
    pid_k = pid % num_k
    end = tl.load(offs_ptr + expert).to(tl.int32)
    start = tl.load(offs_ptr + expert - 1, mask=expert > 0, other=0).to(tl.int32)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    n_mask = offs_n < N
    k_mask = offs_k < K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m in range(start, end, BLOCK_M):
        rows = m + tl.arange(0, BLOCK_M)
        r_mask = rows < end
        if HAS_XSRC:  # noqa: SIM108 (constexpr branch)
            xs = tl.load(xsrc_ptr + rows, mask=r_mask, other=0) // X_DIV
        else:
            xs = rows
        if HAS_DYSRC:  # noqa: SIM108 (constexpr branch)
            ds = tl.load(dysrc_ptr + rows, mask=r_mask, other=0)
        else:
            ds = rows
        dy_t = tl.load(
            dy_ptr + ds.to(tl.int64)[None, :] * stride_dm + offs_n[:, None] * stride_dn,
            mask=r_mask[None, :] & n_mask[:, None],
            other=0.0,
        )
        xt = tl.load(
            x_ptr + xs.to(tl.int64)[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=r_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        acc = tl.dot(dy_t, xt, acc, input_precision=PRECISION)
    dw_ptrs = (
        dw_ptr
        + expert.to(tl.int64) * stride_we
        + offs_n[:, None] * stride_wn
        + offs_k[None, :] * stride_wk
    )
    tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=n_mask[:, None] & k_mask[None, :])


@triton.jit
def _gemv(
    x_ptr,
    w_ptr,
    y_ptr,
    offs_ptr,
    src_ptr,
    dst_ptr,
    N,
    K,
    E,
    SRC_DIV,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    HAS_SRC: tl.constexpr,
    HAS_DST: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0)
    pid_n = tl.program_id(1)
    e_idx = tl.arange(0, E_P2)
    ends = tl.load(offs_ptr + e_idx, mask=e_idx < E, other=2147483647).to(tl.int32)
    expert = tl.sum((ends <= row).to(tl.int32), 0)
    if HAS_SRC:  # noqa: SIM108 (constexpr branch)
        src = tl.load(src_ptr + row) // SRC_DIV
    else:
        src = row
    if HAS_DST:  # noqa: SIM108 (constexpr branch)
        dst = tl.load(dst_ptr + row)
    else:
        dst = row
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        xv = tl.load(
            x_ptr + src.to(tl.int64) * stride_xm + offs_k * stride_xk,
            mask=k_mask,
            other=0.0,
        )
        wt = tl.load(
            w_ptr
            + expert.to(tl.int64) * stride_we
            + offs_n[:, None] * stride_wn
            + offs_k[None, :] * stride_wk,
            mask=n_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        acc += tl.sum(wt.to(tl.float32) * xv.to(tl.float32)[None, :], axis=1)
    tl.store(
        y_ptr + dst.to(tl.int64) * stride_ym + offs_n * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=n_mask,
    )


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _gemm_config(pairs: int, experts: int, n: int, k: int) -> dict[str, int]:
    if triton_interpreting():
        cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=1, num_stages=1)
    elif pairs <= 4096:  # H100 sweep (kernel_sweep.csv): faster up to ~2k tokens at top-2
        cfg = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4)
    else:
        cfg = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
    return {**cfg, **CONFIG_OVERRIDES.get("gemm", {})}


def _xty_config(pairs: int, experts: int, n: int, k: int) -> dict[str, int]:
    if triton_interpreting():
        cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1, num_stages=1)
    elif pairs <= 4096:
        cfg = dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4)
    else:
        cfg = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3)
    return {**cfg, **CONFIG_OVERRIDES.get("xty", {})}


def _gemv_config() -> dict[str, int]:
    if triton_interpreting():
        cfg = dict(BLOCK_N=16, BLOCK_K=16, num_warps=1)
    else:
        cfg = dict(BLOCK_N=32, BLOCK_K=256, num_warps=4)
    return {**cfg, **CONFIG_OVERRIDES.get("gemv", {})}


def gather_gemm_scatter(
    x: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor,
    src: torch.Tensor | None,
    src_div: int,
    dst: torch.Tensor | None,
    pairs: int,
    *,
    transpose_weight: bool = False,
    allow_gemv: bool = True,
) -> torch.Tensor:
    """``y[dst[p]] = x[src[p] // src_div] @ W_e(p)^T`` (``W_e`` when ``transpose_weight``)."""
    experts = weight.shape[0]
    if transpose_weight:
        n, k = weight.shape[2], weight.shape[1]
        s_wn, s_wk = weight.stride(2), weight.stride(1)
    else:
        n, k = weight.shape[1], weight.shape[2]
        s_wn, s_wk = weight.stride(1), weight.stride(2)
    y = torch.empty(pairs, n, device=x.device, dtype=x.dtype)
    if pairs == 0 or n == 0:
        return y
    if k == 0:
        return y.zero_()
    e_p2 = triton.next_power_of_2(experts)
    dummy = offsets
    if allow_gemv and pairs <= DECODE_MAX_PAIRS:
        cfg = _gemv_config()
        grid = (pairs, triton.cdiv(n, cfg["BLOCK_N"]))
        _gemv[grid](
            x, weight, y, offsets,
            dummy if src is None else src, dummy if dst is None else dst,
            n, k, experts, src_div,
            x.stride(0), x.stride(1), weight.stride(0), s_wn, s_wk, y.stride(0), y.stride(1),
            HAS_SRC=src is not None, HAS_DST=dst is not None, E_P2=e_p2,
            BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], num_warps=cfg["num_warps"],
        )  # fmt: skip
        return y
    cfg = _gemm_config(pairs, experts, n, k)
    num_m_tiles = triton.cdiv(pairs, cfg["BLOCK_M"]) + experts
    grid = (num_m_tiles * triton.cdiv(n, cfg["BLOCK_N"]),)
    _gather_gemm_scatter[grid](
        x, weight, y, offsets,
        dummy if src is None else src, dummy if dst is None else dst,
        n, k, experts, src_div, num_m_tiles,
        x.stride(0), x.stride(1), weight.stride(0), s_wn, s_wk, y.stride(0), y.stride(1),
        HAS_SRC=src is not None, HAS_DST=dst is not None, E_P2=e_p2,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        GROUP_M=cfg["GROUP_M"], PRECISION=_precision(x.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return y


def grouped_xty(
    x: torch.Tensor,
    dy: torch.Tensor,
    offsets: torch.Tensor,
    x_src: torch.Tensor | None,
    x_div: int,
    dy_src: torch.Tensor | None,
    weight_shape: torch.Size,
    pairs: int,
) -> torch.Tensor:
    """``dW[e] = sum_{p in e} dy[dy_src[p]]^T x[x_src[p] // x_div]`` -> ``[E, N, K]``."""
    experts, n, k = weight_shape
    dw = torch.empty(weight_shape, device=x.device, dtype=x.dtype)
    if n == 0 or k == 0:
        return dw
    if pairs == 0:
        return dw.zero_()
    cfg = _xty_config(pairs, experts, n, k)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]) * triton.cdiv(k, cfg["BLOCK_K"]), experts)
    _grouped_xty[grid](
        x, dy, dw, offsets,
        offsets if x_src is None else x_src, offsets if dy_src is None else dy_src,
        n, k, x_div,
        x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
        dw.stride(0), dw.stride(1), dw.stride(2),
        HAS_XSRC=x_src is not None, HAS_DYSRC=dy_src is not None,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        PRECISION=_precision(x.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return dw


class _ExpertLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, sorted_pair, offsets, input_order, output_order, k):
        pairs = sorted_pair.numel()
        src = None if input_order == "sorted" else sorted_pair
        src_div = k if input_order == "token" else 1
        dst = sorted_pair if output_order == "pair" else None
        y = gather_gemm_scatter(x, weight, offsets, src, src_div, dst, pairs)
        ctx.save_for_backward(x, weight, sorted_pair, offsets)
        ctx.orders = (input_order, output_order, k)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, sorted_pair, offsets = ctx.saved_tensors
        input_order, output_order, k = ctx.orders
        pairs = sorted_pair.numel()
        dy_src = sorted_pair if output_order == "pair" else None
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dst = None if input_order == "sorted" else sorted_pair
            dx = gather_gemm_scatter(
                dy,
                weight,
                offsets,
                dy_src,
                1,
                dst,
                pairs,
                transpose_weight=True,
                allow_gemv=False,
            )
            if input_order == "token" and k > 1:
                dx = dx.view(x.shape[0], k, x.shape[1]).sum(1)
        if ctx.needs_input_grad[1]:
            src = None if input_order == "sorted" else sorted_pair
            src_div = k if input_order == "token" else 1
            dw = grouped_xty(x, dy, offsets, src, src_div, dy_src, weight.shape, pairs)
        return dx, dw, None, None, None, None, None


def expert_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
    *,
    input_order: str = "token",
    output_order: str = "pair",
) -> torch.Tensor:
    k = check_args(x, weight, sorted_pair, expert_offsets, input_order, output_order)
    return _ExpertLinear.apply(x, weight, sorted_pair, expert_offsets, input_order, output_order, k)


__all__ = [
    "CONFIG_OVERRIDES",
    "DECODE_MAX_PAIRS",
    "expert_linear",
    "gather_gemm_scatter",
    "grouped_xty",
]
