# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Padding-free Triton kernels for the expert linear and the fused SwiGLU expert MLP.

All kernels read the int32 ``expert_offsets`` on the device (no host sync):

- ``_gather_gemm_scatter``: ``y[dst(p)] = x[src(p)] @ W[e(p)]^T`` over the expert-sorted pairs.
  The grid is an upper bound on row tiles, ``cdiv(P, BLOCK_M) + E``; each program finds its
  expert and row range from the offsets inside the kernel (a cumulative sum over E tile counts),
  so a tile never straddles two experts and no row is padded or copied. Gather (the token row of
  each pair) happens on the A-tile load and scatter (back to pair order) on the store.
  The same kernel with W's strides swapped gives the input gradient ``dX = dY @ W``.
  Epilogues: ``plain``; ``glu`` (two accumulators, the gate rows ``[0, N)`` and up rows
  ``[N, 2N)`` of ``W``, writes ``silu(g) * u`` and optionally the pre-activation ``h = [g, u]``
  for backward), so the SwiGLU never makes its own memory pass; ``glu_bwd`` (the gradient of
  the activation input: reads ``h``, by default issuing those loads before the K loop, and
  writes ``dh = [dg, du]`` straight from ``d(act)``).
  Hopper TMA: where the operand is contiguous and 16-byte aligned, the weight tile (and the
  A tile when ``x`` is already in sorted order) is loaded through a host-side tensor descriptor
  instead of pointer arithmetic; rows of a neighbouring expert that a descriptor tile picks up
  only feed output rows/columns that the masked store drops.
  Persistent grid (config key ``PERSISTENT``, on above 4,096 pairs per
  ``KernelOptions.persistent_large``):
  one program per SM walks the same tiles (``_gemm_tile``), which removes the partial last wave
  of the plain GEMMs and lets Triton overlap a tile's epilogue with the next tile's loads
  (``FLATTEN``: Triton's loop flattening; ``WARP_SPECIALIZE``: its warp specialization, opt-in).
- ``_grouped_xty``: the weight gradient ``dW[e] = dY_e^T X_e``, one program per (expert, N tile,
  K tile) looping over that expert's rows; gathers on both operands, or, when both are already
  in sorted order, TMA loads for the whole row blocks and one masked tail; empty experts get
  zeros. ``PERSISTENT`` works here too (off by default: no gain measured).
- ``_gemv``: the small-batch (decode) path, one program per (pair, N tile), a plain dot product
  per output without tensor-core tiles, for a handful of pairs (``glu`` epilogue too).

Accumulation is fp32; fp32 inputs use IEEE products (exact enough for tight tests). Launch
thresholds and tile overrides come from ``jetmoe_model.ops.options.kernel_options()``, read once
per call.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tensor_utils.ops import triton_interpreting

from ..options import KernelOptions, kernel_options
from .naive import check_args

try:  # host-side TMA descriptors (Triton >= 3.4)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: pointer loads only
    TensorDescriptor = None


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
def swiglu_grad(d_act, g_in, u_in):
    """``(dg, du)`` of ``act = silu(g) * u`` given ``d(act)``, in fp32."""
    g = g_in.to(tl.float32)
    u = u_in.to(tl.float32)
    sig = tl.sigmoid(g)
    return d_act * u * sig * (1.0 + g * (1.0 - sig)), d_act * g * sig


@triton.jit
def _out_rows(dst_ptr, rows, row_mask, HAS_DST: tl.constexpr):
    """Output row of each of the tile's rows: scattered through ``dst`` or in place."""
    if HAS_DST:  # noqa: SIM108 (constexpr branch)
        dst = tl.load(dst_ptr + rows, mask=row_mask, other=0)
    else:
        dst = rows
    return dst


@triton.jit
def _gemm_tile(
    pid,
    x_ptr,
    w_ptr,
    y_ptr,
    h_ptr,
    offs_ptr,
    src_ptr,
    dst_ptr,
    N,
    K,
    E,
    W_ROWS,
    SRC_DIV,
    num_m_tiles,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    stride_hm,
    stride_hn,
    HAS_SRC: tl.constexpr,
    HAS_DST: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
    EPILOGUE: tl.constexpr,  # 0 plain, 1 glu forward, 2 glu backward
    SAVE_H: tl.constexpr,
    X_DESC: tl.constexpr,
    W_DESC: tl.constexpr,
    W_T: tl.constexpr,
    H_EARLY: tl.constexpr,
):
    """One output tile (flat index ``pid`` over m tiles x n tiles) of ``_gather_gemm_scatter``."""
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
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if not X_DESC:
        x_ptrs = x_ptr + src.to(tl.int64)[:, None] * stride_xm + offs_k[None, :] * stride_xk
    if not W_DESC:
        w_ptrs = (
            w_ptr
            + expert.to(tl.int64) * stride_we
            + offs_n[None, :] * stride_wn
            + offs_k[:, None] * stride_wk
        )
    if EPILOGUE == 2:  # noqa: SIM102 (constexpr branches)
        if H_EARLY:  # h tile loads issued now land while the tensor cores run the K loop
            h_rows = _out_rows(dst_ptr, rows, row_mask, HAS_DST).to(tl.int64)[:, None]
            h_early = h_ptr + h_rows * stride_hm + offs_n[None, :] * stride_hn
            h_mask = row_mask[:, None] & (offs_n[None, :] < N)
            g_in = tl.load(h_early, mask=h_mask, other=0.0)
            u_in = tl.load(h_early + N * stride_hn, mask=h_mask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if EPILOGUE == 1:
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_k = tl.where(expert < E, tl.cdiv(K, BLOCK_K), 0)
    w_row = expert * W_ROWS  # first row of this expert in the [E * rows, cols] descriptor view
    for kk in range(0, n_k):
        k0 = kk * BLOCK_K
        k_left = K - k0
        if X_DESC:
            a = x_ptr.load([row_start, k0])
        else:
            a = tl.load(x_ptrs, mask=row_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
        if W_DESC:
            if W_T:  # noqa: SIM108 (constexpr branch) weight [E, K, N]: tile is [BLOCK_K, BLOCK_N]
                b = w_ptr.load([w_row + k0, n0])
            else:  # weight [E, N, K]: load [BLOCK_N, BLOCK_K], feed its transpose
                b = w_ptr.load([w_row + n0, k0]).T
        else:
            b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if EPILOGUE == 1:  # up rows N.. of the same expert
            if W_DESC:
                b_up = w_ptr.load([w_row + N + n0, k0]).T
            else:
                b_up = tl.load(
                    w_ptrs + N * stride_wn,
                    mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N),
                    other=0.0,
                )
            acc_up = tl.dot(a, b_up, acc_up, input_precision=PRECISION)
        if not X_DESC:
            x_ptrs += BLOCK_K * stride_xk
        if not W_DESC:
            w_ptrs += BLOCK_K * stride_wk
    dst64 = _out_rows(dst_ptr, rows, row_mask, HAS_DST).to(tl.int64)[:, None]
    mask = row_mask[:, None] & (offs_n[None, :] < N)
    y_ptrs = y_ptr + dst64 * stride_ym + offs_n[None, :] * stride_yn
    if EPILOGUE == 0:
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)
    elif EPILOGUE == 1:
        act = acc * tl.sigmoid(acc) * acc_up
        tl.store(y_ptrs, act.to(y_ptr.dtype.element_ty), mask=mask)
        if SAVE_H:
            h_ptrs = h_ptr + dst64 * stride_hm + offs_n[None, :] * stride_hn
            tl.store(h_ptrs, acc.to(h_ptr.dtype.element_ty), mask=mask)
            tl.store(h_ptrs + N * stride_hn, acc_up.to(h_ptr.dtype.element_ty), mask=mask)
    else:  # acc = d(act); h = [g, u] at the same rows; y = dh = [dg, du]
        if not H_EARLY:
            h_ptrs = h_ptr + dst64 * stride_hm + offs_n[None, :] * stride_hn
            g_in = tl.load(h_ptrs, mask=mask, other=0.0)
            u_in = tl.load(h_ptrs + N * stride_hn, mask=mask, other=0.0)
        dg, du = swiglu_grad(acc, g_in, u_in)
        tl.store(y_ptrs, dg.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(y_ptrs + N * stride_yn, du.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gather_gemm_scatter(
    x_ptr,
    w_ptr,
    y_ptr,
    h_ptr,
    offs_ptr,
    src_ptr,
    dst_ptr,
    N,
    K,
    E,
    W_ROWS,
    SRC_DIV,
    num_m_tiles,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    stride_hm,
    stride_hn,
    HAS_SRC: tl.constexpr,
    HAS_DST: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
    EPILOGUE: tl.constexpr,  # 0 plain, 1 glu forward, 2 glu backward
    SAVE_H: tl.constexpr,
    X_DESC: tl.constexpr,
    W_DESC: tl.constexpr,
    W_T: tl.constexpr,
    H_EARLY: tl.constexpr,
    NUM_PROGS,
    PERSISTENT: tl.constexpr,
    FLATTEN: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    # PERSISTENT: one program per SM walks the tiles, so the pipeliner can overlap one tile's
    # epilogue with the next tile's first loads. One program per tile stays loop-free: the same
    # body wrapped in a one-pass loop measured 2-17% slower at 1,024 tokens on the H100 (dh
    # epilogue 0.211 -> 0.246 ms), hence the separate tile function and two call sites.
    if PERSISTENT:
        num_tiles = num_m_tiles * tl.cdiv(N, BLOCK_N)
        for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGS, flatten=FLATTEN,
                             warp_specialize=WARP_SPECIALIZE):  # fmt: skip
            _gemm_tile(tile,
                x_ptr, w_ptr, y_ptr, h_ptr, offs_ptr, src_ptr, dst_ptr, N, K, E, W_ROWS, SRC_DIV,
                num_m_tiles, stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_ym,
                stride_yn, stride_hm, stride_hn, HAS_SRC, HAS_DST, E_P2, BLOCK_M, BLOCK_N,
                BLOCK_K, GROUP_M, PRECISION, EPILOGUE, SAVE_H, X_DESC, W_DESC, W_T, H_EARLY)  # fmt: skip
    else:
        _gemm_tile(tl.program_id(0),
            x_ptr, w_ptr, y_ptr, h_ptr, offs_ptr, src_ptr, dst_ptr, N, K, E, W_ROWS, SRC_DIV,
            num_m_tiles, stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_ym,
            stride_yn, stride_hm, stride_hn, HAS_SRC, HAS_DST, E_P2, BLOCK_M, BLOCK_N,
            BLOCK_K, GROUP_M, PRECISION, EPILOGUE, SAVE_H, X_DESC, W_DESC, W_T, H_EARLY)  # fmt: skip


@triton.jit
def _xty_step(acc, x_ptr, dy_ptr, xs, ds, r_mask, offs_n, offs_k, n_mask, k_mask,
              stride_xm, stride_xk, stride_dm, stride_dn, PRECISION: tl.constexpr):  # fmt: skip
    """One masked row block of ``acc += dy[ds]^T x[xs]`` with pointer loads."""
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
    return tl.dot(dy_t, xt, acc, input_precision=PRECISION)


@triton.jit
def _xty_tile(
    pid,
    expert,
    x_ptr,
    dy_ptr,
    x_desc,
    dy_desc,
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
    DESC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Tile ``pid`` (over N tiles x K tiles) of expert ``expert``'s ``dW`` (``_grouped_xty``)."""
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
    if DESC:
        # both operands in sorted order: whole row blocks through TMA, then one masked tail
        # (a descriptor tile past `end` would read the next expert's rows into the sum)
        n_full = (end - start) // BLOCK_M
        for i in range(0, n_full):
            m = start + i * BLOCK_M
            dy_t = dy_desc.load([m, pid_n * BLOCK_N]).T
            xt = x_desc.load([m, pid_k * BLOCK_K])
            acc = tl.dot(dy_t, xt, acc, input_precision=PRECISION)
        rows = start + n_full * BLOCK_M + tl.arange(0, BLOCK_M)
        if start + n_full * BLOCK_M < end:
            acc = _xty_step(acc, x_ptr, dy_ptr, rows, rows, rows < end, offs_n, offs_k,
                            n_mask, k_mask, stride_xm, stride_xk, stride_dm, stride_dn,
                            PRECISION)  # fmt: skip
    else:
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
            acc = _xty_step(acc, x_ptr, dy_ptr, xs, ds, r_mask, offs_n, offs_k, n_mask, k_mask,
                            stride_xm, stride_xk, stride_dm, stride_dn, PRECISION)  # fmt: skip
    dw_ptrs = (
        dw_ptr
        + expert.to(tl.int64) * stride_we
        + offs_n[:, None] * stride_wn
        + offs_k[None, :] * stride_wk
    )
    tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=n_mask[:, None] & k_mask[None, :])


@triton.jit
def _grouped_xty(
    x_ptr,
    dy_ptr,
    x_desc,
    dy_desc,
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
    DESC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    E,
    NUM_PROGS,
    PERSISTENT: tl.constexpr,
    FLATTEN: tl.constexpr,
):
    tiles = tl.cdiv(N, BLOCK_N) * tl.cdiv(K, BLOCK_K)
    # loop-free without PERSISTENT: a one-pass loop measured ~20% slower at 1,024 tokens
    if PERSISTENT:  # one program per SM walks (expert, tile) in order: an expert's rows stay in L2
        for t in tl.range(tl.program_id(0), tiles * E, NUM_PROGS, flatten=FLATTEN):
            _xty_tile(t % tiles, t // tiles,
                x_ptr, dy_ptr, x_desc, dy_desc, dw_ptr, offs_ptr, xsrc_ptr, dysrc_ptr, N, K, X_DIV,
                stride_xm, stride_xk, stride_dm, stride_dn, stride_we, stride_wn, stride_wk,
                HAS_XSRC, HAS_DYSRC, DESC, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)  # fmt: skip
    else:
        _xty_tile(tl.program_id(0), tl.program_id(1),
            x_ptr, dy_ptr, x_desc, dy_desc, dw_ptr, offs_ptr, xsrc_ptr, dysrc_ptr, N, K, X_DIV,
            stride_xm, stride_xk, stride_dm, stride_dn, stride_we, stride_wn, stride_wk,
            HAS_XSRC, HAS_DYSRC, DESC, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)  # fmt: skip


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
    GLU: tl.constexpr,
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
    if GLU:
        acc_up = tl.zeros((BLOCK_N,), dtype=tl.float32)
    w_base = w_ptr + expert.to(tl.int64) * stride_we + offs_n[:, None] * stride_wn
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        xv = tl.load(
            x_ptr + src.to(tl.int64) * stride_xm + offs_k * stride_xk,
            mask=k_mask,
            other=0.0,
        ).to(tl.float32)
        w_mask = n_mask[:, None] & k_mask[None, :]
        wt = tl.load(w_base + offs_k[None, :] * stride_wk, mask=w_mask, other=0.0)
        acc += tl.sum(wt.to(tl.float32) * xv[None, :], axis=1)
        if GLU:
            wu = tl.load(
                w_base + N * stride_wn + offs_k[None, :] * stride_wk, mask=w_mask, other=0.0
            )
            acc_up += tl.sum(wu.to(tl.float32) * xv[None, :], axis=1)
    if GLU:
        acc = acc * tl.sigmoid(acc) * acc_up
    tl.store(
        y_ptr + dst.to(tl.int64) * stride_ym + offs_n * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=n_mask,
    )


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def config_key(epilogue: str, transpose: bool) -> str:
    """The kernel kind of a ``gather_gemm_scatter`` call: its ``config_overrides`` key."""
    return {"glu": "glu", "glu_bwd": "glu_bwd"}.get(epilogue, "gemm_t" if transpose else "gemm")


def _gemm_config(
    pairs: int,
    epilogue: str,
    transpose: bool,
    opts: KernelOptions | None = None,
    interpreted: bool | None = None,
    elem_bytes: int = 2,
) -> dict[str, int]:
    """Tiles per kernel kind (override keys ``glu``, ``glu_bwd``, ``gemm_t``, ``gemm``); ``glu``
    has two accumulators, so its BLOCK_N is half the output-column footprint. ``elem_bytes``:
    the operands' element size (float32 operands get half the K tile at large batches)."""
    opts = opts or kernel_options()
    key = config_key(epilogue, transpose)
    if triton_interpreting() if interpreted is None else interpreted:
        cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=1, num_stages=1)
    elif pairs <= 4096:  # small batches: more, smaller tiles fill the 132 SMs (H100 sweep)
        cfg = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4)
        if key in ("glu", "glu_bwd"):
            cfg["BLOCK_N"] = 64
    else:  # H100 kernel sweep (kernel_sweep.csv, 8,192 tokens): 128x256 output footprint,
        # 8 warps, 4 stages (glu 1.29 vs 1.40 ms with 3, glu_bwd 1.12 vs 1.30, gemm 0.67 vs 0.69;
        # gemm_t the same either way: 1.08 ms)
        cfg = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)
        if key == "gemm_t":
            cfg["num_stages"] = 3
        if key in ("glu", "glu_bwd"):  # glu_bwd: the epilogue also holds two h tiles
            cfg["BLOCK_N"] = 128
        # one program per SM (persistent_probe.csv, H100): the plain GEMMs' last partial wave
        # goes away (8k gemm 0.79 -> 0.57 ms); flattening helps the GLU epilogues a little
        cfg.update(opts.persistent_large.get(key, {}))
        if elem_bytes >= 4:  # float32: these tiles need 288-352 KiB of shared memory at 3-4
            # stages (AOT sweep for sm_90), over the H100's 227 KiB per block; BLOCK_K 32 halves it
            cfg["BLOCK_K"] = 32
    return {**cfg, **opts.config_overrides.get(key, {})}


def _xty_config(
    pairs: int, opts: KernelOptions | None = None, interpreted: bool | None = None
) -> dict[str, int]:
    opts = opts or kernel_options()
    if triton_interpreting() if interpreted is None else interpreted:
        cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=1, num_stages=1)
    elif pairs <= 4096:
        cfg = dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4)
    else:  # kernel sweep, 8,192 tokens: 256-row dW tiles 1.78 ms vs 2.08 for 128 (both dWs)
        cfg = dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=128, num_warps=8, num_stages=3)
    return {**cfg, **opts.config_overrides.get("xty", {})}


def _gemv_config(
    opts: KernelOptions | None = None, interpreted: bool | None = None
) -> dict[str, int]:
    opts = opts or kernel_options()
    if triton_interpreting() if interpreted is None else interpreted:
        cfg = dict(BLOCK_N=16, BLOCK_K=16, num_warps=1)
    else:
        cfg = dict(BLOCK_N=32, BLOCK_K=256, num_warps=4)
    return {**cfg, **opts.config_overrides.get("gemv", {})}


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.cache
def _hopper(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


def _tma_ok(t: torch.Tensor, pairs: int | None = None, opts: KernelOptions | None = None) -> bool:
    """A TMA descriptor needs a dense row-major tensor with 16-byte aligned base and rows (and
    pays off above ``tma_min_pairs`` pairs, when ``pairs`` is given); ``use_tma`` turns it off."""
    opts = opts or kernel_options()
    return (
        opts.use_tma
        and TensorDescriptor is not None
        and (pairs is None or pairs > opts.tma_min_pairs)
        and t.is_contiguous()
        and t.data_ptr() % 16 == 0
        and (t.shape[-1] * t.element_size()) % 16 == 0
        and (triton_interpreting() or (t.is_cuda and _hopper(t.device)))
    )


def _descriptor(t: torch.Tensor, shape: list[int], strides: list[int], block: list[int]):
    """A TMA tensor descriptor (callers checked ``_tma_ok``, so Triton has them)."""
    assert TensorDescriptor is not None
    return TensorDescriptor(t, shape, strides, block)


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
    epilogue: str = "plain",
    h: torch.Tensor | None = None,
    save_h: bool = False,
    opts: KernelOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``y[dst[p]] = x[src[p] // src_div] @ W_e(p)^T`` (``W_e`` when ``transpose_weight``).

    ``epilogue="glu"``: ``W_e``'s rows are ``[gate; up]``, ``y = silu(x W_g^T) * (x W_u^T)``
    (and ``h = [x W_g^T, x W_u^T]`` returned when ``save_h``); ``"glu_bwd"``: ``x W`` is
    ``d(act)`` and ``y = dh`` from the saved pre-activation ``h`` (rows in ``dst`` order).
    Returns ``(y, h)`` (``h`` None unless saved). ``opts``: default ``kernel_options()``.
    """
    opts = opts or kernel_options()
    experts = weight.shape[0]
    if transpose_weight:
        n, k = weight.shape[2], weight.shape[1]
        s_wn, s_wk = weight.stride(2), weight.stride(1)
    else:
        n, k = weight.shape[1], weight.shape[2]
        s_wn, s_wk = weight.stride(1), weight.stride(2)
    glu = epilogue == "glu"
    if glu:
        n //= 2
    width = 2 * n if epilogue == "glu_bwd" else n
    y = torch.empty(pairs, width, device=x.device, dtype=x.dtype)
    h_out = torch.empty(pairs, 2 * n, device=x.device, dtype=x.dtype) if glu and save_h else None
    if pairs == 0 or n == 0:
        return y, h_out
    if k == 0:
        y.zero_()
        if h_out is not None:
            h_out.zero_()
        return y, h_out
    e_p2 = triton.next_power_of_2(experts)
    dummy = offsets
    if allow_gemv and pairs <= opts.decode_max_pairs and epilogue != "glu_bwd" and h_out is None:
        cfg = _gemv_config(opts)
        grid = (pairs, triton.cdiv(n, cfg["BLOCK_N"]))
        _gemv[grid](
            x, weight, y, offsets,
            dummy if src is None else src, dummy if dst is None else dst,
            n, k, experts, src_div,
            x.stride(0), x.stride(1), weight.stride(0), s_wn, s_wk, y.stride(0), y.stride(1),
            HAS_SRC=src is not None, HAS_DST=dst is not None, E_P2=e_p2,
            BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GLU=glu, num_warps=cfg["num_warps"],
        )  # fmt: skip
        return y, h_out
    cfg = _gemm_config(pairs, epilogue, transpose_weight, opts, elem_bytes=x.element_size())
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    # W through TMA: the [E * rows, cols] view; a transposed tile walks rows along K, so K must
    # split into whole tiles (no reads into the next expert's rows).
    w_desc = _tma_ok(weight, pairs, opts) and (not transpose_weight or k % bk == 0)
    x_desc = src is None and _tma_ok(x, pairs, opts)
    w_arg = weight
    if w_desc:
        rows, cols = weight.shape[1], weight.shape[2]
        block = [bk, bn] if transpose_weight else [bn, bk]
        w_arg = _descriptor(weight, [experts * rows, cols], [cols, 1], block)
    x_arg = _descriptor(x, list(x.shape), list(x.stride()), [bm, bk]) if x_desc else x
    h_arg = h if h is not None else h_out
    num_m_tiles = triton.cdiv(pairs, bm) + experts
    num_tiles = num_m_tiles * triton.cdiv(n, bn)
    persistent = bool(cfg.get("PERSISTENT", 0))
    if persistent:  # the interpreter runs programs one by one: 3 of them still loop
        num_progs = min(num_tiles, 3 if triton_interpreting() else _num_sms(x.device))
    else:
        num_progs = num_tiles
    grid = (num_progs,)
    _gather_gemm_scatter[grid](
        x_arg, w_arg, y, dummy if h_arg is None else h_arg, offsets,
        dummy if src is None else src, dummy if dst is None else dst,
        n, k, experts, weight.shape[1], src_div, num_m_tiles,
        x.stride(0), x.stride(1), weight.stride(0), s_wn, s_wk, y.stride(0), y.stride(1),
        0 if h_arg is None else h_arg.stride(0), 0 if h_arg is None else h_arg.stride(1),
        HAS_SRC=src is not None, HAS_DST=dst is not None, E_P2=e_p2,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], PRECISION=_precision(x.dtype),
        EPILOGUE={"plain": 0, "glu": 1, "glu_bwd": 2}[epilogue], SAVE_H=h_out is not None,
        X_DESC=x_desc, W_DESC=w_desc, W_T=transpose_weight,
        H_EARLY=epilogue == "glu_bwd" and bool(cfg.get("H_EARLY", opts.dh_h_early)),
        NUM_PROGS=num_progs, PERSISTENT=persistent, FLATTEN=bool(cfg.get("FLATTEN", 0)),
        WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", 0)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return y, h_out


def grouped_xty(
    x: torch.Tensor,
    dy: torch.Tensor,
    offsets: torch.Tensor,
    x_src: torch.Tensor | None,
    x_div: int,
    dy_src: torch.Tensor | None,
    weight_shape: torch.Size,
    pairs: int,
    opts: KernelOptions | None = None,
) -> torch.Tensor:
    """``dW[e] = sum_{p in e} dy[dy_src[p]]^T x[x_src[p] // x_div]`` -> ``[E, N, K]``."""
    opts = opts or kernel_options()
    experts, n, k = weight_shape
    dw = torch.empty(weight_shape, device=x.device, dtype=x.dtype)
    if n == 0 or k == 0:
        return dw
    if pairs == 0:
        return dw.zero_()
    cfg = _xty_config(pairs, opts)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    desc = x_src is None and dy_src is None and _tma_ok(x, pairs, opts) and _tma_ok(dy, pairs, opts)
    x_desc = _descriptor(x, list(x.shape), list(x.stride()), [bm, bk]) if desc else x
    dy_desc = _descriptor(dy, list(dy.shape), list(dy.stride()), [bm, bn]) if desc else dy
    tiles = triton.cdiv(n, bn) * triton.cdiv(k, bk)
    persistent = bool(cfg.get("PERSISTENT", 0))
    if persistent:  # the interpreter runs programs one by one: 3 of them still loop
        num_progs = min(tiles * experts, 3 if triton_interpreting() else _num_sms(x.device))
        grid = (num_progs,)
    else:
        num_progs, grid = tiles * experts, (tiles, experts)
    _grouped_xty[grid](
        x, dy, x_desc, dy_desc, dw, offsets,
        offsets if x_src is None else x_src, offsets if dy_src is None else dy_src,
        n, k, x_div,
        x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
        dw.stride(0), dw.stride(1), dw.stride(2),
        HAS_XSRC=x_src is not None, HAS_DYSRC=dy_src is not None, DESC=desc,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=_precision(x.dtype),
        E=experts, NUM_PROGS=num_progs, PERSISTENT=persistent,
        FLATTEN=bool(cfg.get("FLATTEN", 0)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return dw


class _ExpertLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, sorted_pair, offsets, input_order, output_order, k):
        pairs = sorted_pair.numel()
        src = None if input_order == "sorted" else sorted_pair
        src_div = k if input_order == "token" else 1
        dst = sorted_pair if output_order == "pair" else None
        y, _ = gather_gemm_scatter(x, weight, offsets, src, src_div, dst, pairs)
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
            dx, _ = gather_gemm_scatter(
                dy, weight, offsets, dy_src, 1, dst, pairs, transpose_weight=True, allow_gemv=False
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
    "aot_launches",
    "config_key",
    "expert_linear",
    "gather_gemm_scatter",
    "grouped_xty",
    "swiglu_grad",
]


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs (tensor_utils_dev.aot): every launch configuration above

AOT_EXPERTS = 8  # E_P2 of the released JetMoE-8B routers (8 experts); the tiles do not depend on it
_AOT_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_AOT_REGIMES = (64, 8192)  # pairs: the small-batch tiles and the large ones (persistent, TMA)


def _aot_operand(t: str, desc: bool, block: list[int]) -> str:
    return f"tensordesc<{t}[{block[0]}, {block[1]}]>" if desc else f"*{t}"


def _aot_gemm(dtype, kind_args, pairs, opts):
    """The ``_gather_gemm_scatter`` launches of one call site at one batch regime: with and
    without the TMA descriptors that its operands may get there."""
    from tensor_utils.ops import KernelLaunch

    t = _AOT_TYPES[dtype]
    epilogue, transpose, has_src, has_dst = (
        kind_args["epilogue"],
        kind_args["transpose"],
        *(kind_args["src_dst"]),
    )
    cfg = _gemm_config(
        pairs, epilogue, transpose, opts, interpreted=False, elem_bytes=dtype.itemsize
    )
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    tma = opts.use_tma and pairs > opts.tma_min_pairs
    w_options = (True, False) if tma else (False,)
    x_options = (True, False) if tma and not has_src else (False,)
    for w_desc in w_options:
        for x_desc in x_options:
            for extra in kind_args.get("variants", ({},)):
                glu_bwd = epilogue == "glu_bwd"
                has_h = (epilogue == "glu" and extra.get("SAVE_H", False)) or glu_bwd
                signature = {
                    "x_ptr": _aot_operand(t, x_desc, [bm, bk]),
                    "w_ptr": _aot_operand(t, w_desc, [bk, bn] if transpose else [bn, bk]),
                    "y_ptr": f"*{t}",
                    "h_ptr": f"*{t}" if has_h else "*i32",
                    "offs_ptr": "*i32",
                    "src_ptr": "*i64" if has_src else "*i32",
                    "dst_ptr": "*i64" if has_dst else "*i32",
                    **dict.fromkeys(("N", "K", "E", "W_ROWS", "SRC_DIV", "num_m_tiles"), "i32"),
                    **dict.fromkeys(
                        ("stride_xm", "stride_xk", "stride_we", "stride_wn", "stride_wk"), "i32"
                    ),
                    **dict.fromkeys(("stride_ym", "stride_yn", "stride_hm", "stride_hn"), "i32"),
                    "NUM_PROGS": "i32",
                }
                constexprs = {
                    "HAS_SRC": has_src,
                    "HAS_DST": has_dst,
                    "E_P2": AOT_EXPERTS,
                    "BLOCK_M": bm,
                    "BLOCK_N": bn,
                    "BLOCK_K": bk,
                    "GROUP_M": cfg["GROUP_M"],
                    "PRECISION": _precision(dtype),
                    "EPILOGUE": {"plain": 0, "glu": 1, "glu_bwd": 2}[epilogue],
                    "SAVE_H": bool(extra.get("SAVE_H", False)),
                    "X_DESC": x_desc,
                    "W_DESC": w_desc,
                    "W_T": transpose,
                    "H_EARLY": glu_bwd and bool(extra.get("H_EARLY", opts.dh_h_early)),
                    "PERSISTENT": bool(cfg.get("PERSISTENT", 0)),
                    "FLATTEN": bool(cfg.get("FLATTEN", 0)),
                    "WARP_SPECIALIZE": bool(cfg.get("WARP_SPECIALIZE", 0)),
                }
                yield KernelLaunch(
                    _gather_gemm_scatter,
                    signature,
                    constexprs,
                    num_warps=cfg["num_warps"],
                    num_stages=cfg["num_stages"],
                    label=f"{config_key(epilogue, transpose)} {t} pairs={pairs} src={has_src} "
                    f"dst={has_dst} w_desc={w_desc} x_desc={x_desc} {extra}",
                )


# the call sites of gather_gemm_scatter: expert linear forward/backward, the MLP's GEMMs
_AOT_GEMM_SITES = [
    *(
        {"epilogue": "plain", "transpose": False, "src_dst": sd}
        for sd in ((True, True), (True, False), (False, True), (False, False))
    ),
    *(
        {"epilogue": "plain", "transpose": True, "src_dst": sd}
        for sd in ((True, True), (True, False), (False, True), (False, False))
    ),
    *(
        {
            "epilogue": "glu",
            "transpose": False,
            "src_dst": (src, False),
            "variants": ({"SAVE_H": True}, {"SAVE_H": False}),
        }
        for src in (True, False)
    ),
    {
        "epilogue": "glu_bwd",
        "transpose": True,
        "src_dst": (False, False),
        "variants": ({"H_EARLY": True}, {"H_EARLY": False}),
    },
]


def aot_launches(dtypes=None, regimes=_AOT_REGIMES):
    """Every configuration the expert kernels launch with under the default ``KernelOptions``
    (E_P2 = ``AOT_EXPERTS``): each dtype; the GEMM at each call site (gather/scatter flags,
    epilogues, ``SAVE_H``, both ``H_EARLY``) at the small-batch tiles and the large ones
    (persistent grid, with and without TMA descriptors); the weight-gradient kernel with each
    gather combination (TMA row blocks for sorted operands); the GEMV decode path."""
    from tensor_utils.ops import KernelLaunch

    opts = KernelOptions()
    for dtype in dtypes or _AOT_TYPES:
        t = _AOT_TYPES[dtype]
        for pairs in regimes:
            for site in _AOT_GEMM_SITES:
                yield from _aot_gemm(dtype, site, pairs, opts)
            cfg = _xty_config(pairs, opts, interpreted=False)
            bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
            tma = opts.use_tma and pairs > opts.tma_min_pairs
            for xsrc, dysrc in ((True, True), (True, False), (False, True), (False, False)):
                for desc in (True, False) if tma and not (xsrc or dysrc) else (False,):
                    signature = {
                        "x_ptr": f"*{t}",
                        "dy_ptr": f"*{t}",
                        "x_desc": _aot_operand(t, desc, [bm, bk]),
                        "dy_desc": _aot_operand(t, desc, [bm, bn]),
                        "dw_ptr": f"*{t}",
                        "offs_ptr": "*i32",
                        "xsrc_ptr": "*i64" if xsrc else "*i32",
                        "dysrc_ptr": "*i64" if dysrc else "*i32",
                        **dict.fromkeys(("N", "K", "X_DIV", "stride_xm", "stride_xk"), "i32"),
                        **dict.fromkeys(("stride_dm", "stride_dn", "stride_we"), "i32"),
                        **dict.fromkeys(("stride_wn", "stride_wk", "E", "NUM_PROGS"), "i32"),
                    }
                    constexprs = {
                        "HAS_XSRC": xsrc,
                        "HAS_DYSRC": dysrc,
                        "DESC": desc,
                        "BLOCK_M": bm,
                        "BLOCK_N": bn,
                        "BLOCK_K": bk,
                        "PRECISION": _precision(dtype),
                        "PERSISTENT": bool(cfg.get("PERSISTENT", 0)),
                        "FLATTEN": bool(cfg.get("FLATTEN", 0)),
                    }
                    yield KernelLaunch(
                        _grouped_xty,
                        signature,
                        constexprs,
                        num_warps=cfg["num_warps"],
                        num_stages=cfg["num_stages"],
                        label=f"xty {t} pairs={pairs} xsrc={xsrc} dysrc={dysrc} desc={desc}",
                    )
        cfg = _gemv_config(opts, interpreted=False)
        for has_src in (True, False):
            for has_dst in (True, False):
                for glu in (True, False):
                    signature = {
                        "x_ptr": f"*{t}",
                        "w_ptr": f"*{t}",
                        "y_ptr": f"*{t}",
                        "offs_ptr": "*i32",
                        "src_ptr": "*i64" if has_src else "*i32",
                        "dst_ptr": "*i64" if has_dst else "*i32",
                        **dict.fromkeys(("N", "K", "E", "SRC_DIV", "stride_xm"), "i32"),
                        **dict.fromkeys(("stride_xk", "stride_we", "stride_wn"), "i32"),
                        **dict.fromkeys(("stride_wk", "stride_ym", "stride_yn"), "i32"),
                    }
                    constexprs = {
                        "HAS_SRC": has_src,
                        "HAS_DST": has_dst,
                        "E_P2": AOT_EXPERTS,
                        "BLOCK_N": cfg["BLOCK_N"],
                        "BLOCK_K": cfg["BLOCK_K"],
                        "GLU": glu,
                    }
                    yield KernelLaunch(
                        _gemv,
                        signature,
                        constexprs,
                        num_warps=cfg["num_warps"],
                        label=f"gemv {t} src={has_src} dst={has_dst} glu={glu}",
                    )
