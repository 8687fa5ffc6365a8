# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Triton kernels for the projected Adam step.

Two launches per GaLore matrix (the projection ``R = G Qᵀ`` itself is one cuBLAS matmul, done
by the caller):

1. ``_moments_kernel``: read ``R, M, V`` once, write ``M, V`` and ``N = M / (sqrt(V) + eps)``
   (fp32 math, one rounding per stored value). For a full-rank parameter (``side == "none"``)
   the same kernel also applies the update and weight decay to ``W`` (a fused AdamW).
2. ``_backproject_kernel``: a tiled matmul ``A @ B`` (``N Q`` or ``P N``) whose epilogue does
   ``W = (1 - decay) * (W - step_size * scale * acc)`` in fp32, so the ``(m, n)`` update is
   never materialized: ``W`` is read and written once.

fp32 operands use IEEE fp32 dot products (no TF32), so the result matches the fp32 reference
to float tolerance.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024


@triton.jit
def _moments_kernel(
    g_ptr,
    m_ptr,
    v_ptr,
    n_ptr,
    w_ptr,
    numel,
    beta1,
    beta2,
    eps,
    step_size,
    decay,
    APPLY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    n = m / (tl.sqrt_rn(v) + eps)
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)
    if APPLY:
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        w = w - step_size * n
        w = w - decay * w
        tl.store(w_ptr + offs, w.to(w_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(n_ptr + offs, n.to(n_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backproject_kernel(
    a_ptr,
    b_ptr,
    w_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_wm,
    stride_wn,
    alpha,
    decay,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: neighbouring programs share rows of A in L2.
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(
            a_ptr + rm[:, None].to(tl.int64) * stride_am + kk[None, :] * stride_ak,
            mask=(rm[:, None] < M) & (kk[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            b_ptr + kk[:, None] * stride_bk + rn[None, :].to(tl.int64) * stride_bn,
            mask=(kk[:, None] < K) & (rn[None, :] < N),
            other=0.0,
        )
        if IEEE:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
    wmask = (rm[:, None] < M) & (rn[None, :] < N)
    wptrs = w_ptr + rm[:, None].to(tl.int64) * stride_wm + rn[None, :].to(tl.int64) * stride_wn
    w = tl.load(wptrs, mask=wmask, other=0.0).to(tl.float32)
    w = w - alpha * acc
    w = w - decay * w
    tl.store(wptrs, w.to(w_ptr.dtype.element_ty), mask=wmask)


def _check_contiguous(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if not t.is_contiguous():
            raise ValueError("galore_optim Triton kernels need contiguous tensors")


def _backproject(weight, a, b, alpha: float, decay: float) -> None:
    M, K = a.shape
    K2, N = b.shape
    if K != K2 or tuple(weight.shape) != (M, N):
        raise ValueError(
            f"back-projection shapes disagree: {tuple(a.shape)} @ {tuple(b.shape)} -> {tuple(weight.shape)}"
        )
    if a.dtype != b.dtype:
        b = b.to(a.dtype)
    ieee = a.dtype == torch.float32
    block_m, block_n = (64, 64) if ieee else (128, 128)
    block_k = 32 if ieee else 64
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _backproject_kernel[grid](
        a,
        b,
        weight,
        M,
        N,
        K,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        weight.stride(0),
        weight.stride(1),
        float(alpha),
        float(decay),
        IEEE=ieee,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP_M=8,
        num_warps=4 if ieee else 8,
        num_stages=3,
    )


def apply_update(weight, update, left, right, side, step_size, scale, decay) -> None:
    """Triton version of :func:`galore_optim.ops.adam_step.naive.apply_update`."""
    alpha = float(step_size) * float(scale)
    if side == "none":
        _check_contiguous(weight, update)
        _apply_elementwise(weight, update, alpha, decay)
        return
    if side == "right":
        a, b = update, right
    elif side == "left":
        a, b = left, update
    elif side == "full":
        a, b = left @ update.to(left.dtype), right
    else:
        raise ValueError(f"unknown side {side!r}")
    _backproject(weight, a.to(right.dtype if right is not None else left.dtype), b, alpha, decay)


@triton.jit
def _axpy_decay_kernel(w_ptr, u_ptr, numel, alpha, decay, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = w - alpha * u
    w = w - decay * w
    tl.store(w_ptr + offs, w.to(w_ptr.dtype.element_ty), mask=mask)


def _apply_elementwise(weight, update, alpha, decay) -> None:
    numel = weight.numel()
    _axpy_decay_kernel[(triton.cdiv(numel, _BLOCK),)](
        weight, update, numel, float(alpha), float(decay), BLOCK=_BLOCK
    )


def projected_adam_step(
    weight, grad, exp_avg, exp_avg_sq, left, right, side, beta1, beta2, eps, step_size, scale, decay
) -> None:
    """Triton version of :func:`galore_optim.ops.adam_step.naive.projected_adam_step`."""
    _check_contiguous(grad, exp_avg, exp_avg_sq, weight)
    if exp_avg.shape != grad.shape or exp_avg_sq.shape != grad.shape:
        raise ValueError(
            f"moment shapes {tuple(exp_avg.shape)} / {tuple(exp_avg_sq.shape)} differ from gradient {tuple(grad.shape)}"
        )
    numel = grad.numel()
    grid = (triton.cdiv(numel, _BLOCK),)
    if side == "none":
        if weight.shape != grad.shape:
            raise ValueError(
                f"weight shape {tuple(weight.shape)} != gradient shape {tuple(grad.shape)}"
            )
        _moments_kernel[grid](
            grad,
            exp_avg,
            exp_avg_sq,
            grad,
            weight,
            numel,
            float(beta1),
            float(beta2),
            float(eps),
            float(step_size) * float(scale),
            float(decay),
            APPLY=True,
            BLOCK=_BLOCK,
        )
        return
    basis = left if left is not None else right
    norm = torch.empty(grad.shape, dtype=basis.dtype, device=grad.device)
    _moments_kernel[grid](
        grad,
        exp_avg,
        exp_avg_sq,
        norm,
        weight,
        numel,
        float(beta1),
        float(beta2),
        float(eps),
        0.0,
        0.0,
        APPLY=False,
        BLOCK=_BLOCK,
    )
    apply_update(weight, norm, left, right, side, step_size, scale, decay)


_FLOATS = ("fp32", "fp16", "bf16")


def aot_launches():
    """Every configuration the adam-step launchers use: each gradient dtype with moments in the
    same dtype or fp32, ``APPLY`` on (full-rank AdamW) and off (projected); the back-projection
    GEMM in each operand dtype (fp32: IEEE dots, 64x64x32 tiles, 4 warps; half types: 128x128x64,
    8 warps) writing a weight of that dtype or fp32; the elementwise update."""
    from tensor_utils.ops import KernelLaunch

    for t in _FLOATS:
        for moment in dict.fromkeys((t, "fp32")):
            for apply in (True, False):
                signature = {
                    "g_ptr": f"*{t}",
                    "m_ptr": f"*{moment}",
                    "v_ptr": f"*{moment}",
                    "n_ptr": f"*{t}",
                    "w_ptr": f"*{t}",
                    "numel": "i32",
                    **dict.fromkeys(("beta1", "beta2", "eps", "step_size", "decay"), "fp32"),
                }
                yield KernelLaunch(
                    _moments_kernel,
                    signature,
                    {"APPLY": apply, "BLOCK": _BLOCK},
                    label=f"moments {t} m={moment} apply={apply}",
                )
        ieee = t == "fp32"
        for w in dict.fromkeys((t, "fp32")):
            signature = {
                "a_ptr": f"*{t}",
                "b_ptr": f"*{t}",
                "w_ptr": f"*{w}",
                **dict.fromkeys(("M", "N", "K"), "i32"),
                **dict.fromkeys(
                    ("stride_am", "stride_ak", "stride_bk", "stride_bn", "stride_wm", "stride_wn"),
                    "i32",
                ),
                "alpha": "fp32",
                "decay": "fp32",
            }
            block = (64, 64, 32) if ieee else (128, 128, 64)
            constexprs = dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), block, strict=True))
            yield KernelLaunch(
                _backproject_kernel,
                signature,
                {"IEEE": ieee, **constexprs, "GROUP_M": 8},
                num_warps=4 if ieee else 8,
                num_stages=3,
                label=f"backproject {t} w={w}",
            )
        signature = {"w_ptr": f"*{t}", "u_ptr": f"*{t}", "numel": "i32"}
        signature.update(alpha="fp32", decay="fp32")
        yield KernelLaunch(_axpy_decay_kernel, signature, {"BLOCK": _BLOCK}, label=f"axpy {t}")
