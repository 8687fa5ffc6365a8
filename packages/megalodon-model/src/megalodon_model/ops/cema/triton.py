"""CEMA as a chunked scan in Triton, forward and backward.

Forward, three launches over x [B, L, D] (any float dtype; math in float32):

1. ``_chunk_state``: one program per (batch row, block of channels, chunk) runs the chunk's steps
   from a zero state and writes its end state ``s_c`` [B, nc, D, N, 2].
2. ``_chunk_carry``: one program per (batch row, block of channels) walks the chunks in order,
   ``H_(c+1) = q^C H_c + s_c`` from ``H_0 = h0``, writing the state entering each chunk.
3. ``_chunk_output``: one program per chunk again, from its entering state: ``y_t`` for every
   step, and the last state at ``t = L - 1``.

Backward (derivation in ``docs/benchmarks/megalodon-model.md`` is not needed to read this: the
three reverse-time states are defined here). With ``c = conj(q)``, going backward in time:

    lam_t   = c lam_(t+1) + conj(eta) dy_t (+ dh_last at t = L-1)   dL/dh_t
    nu_t    = c nu_(t+1) + dy_t                                      so that dL/deta = sum p x nu
    kappa_t = lam_(t+1) + c kappa_(t+1)                              so that dL/dq  = sum p x kappa

    dx_t = sum_n p Re(lam_t);  dp = sum_t x_t Re(lam_t);  deta = sum_t p x_t nu_t (+ h0 term);
    dq = sum_t p x_t kappa_t (+ h0 term);  dh0 = c lam_0

None of them needs the forward states, so the backward is the same three-launch pattern run
backward in time (``_bwd_chunk_state``, ``_bwd_chunk_carry`` with the chunk transition
``(lam, nu, kappa) -> (c^C lam, c^C nu, C c^(C-1) lam + c^C kappa)``, ``_bwd_chunk_output``),
with the parameter gradients accumulated by atomic adds. Padded steps past ``L`` carry zero
input, which leaves every state exact.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import KernelLaunch

from .naive import as_complex, check_inputs

BLOCK_NS = (4, 8, 16, 32)  # EMA dimensions N up to 32, padded to one of these
_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def block_n(n: int) -> int:
    for b in BLOCK_NS:
        if n <= b:
            return b
    raise ValueError(f"cema (triton): EMA dimension N={n} is above {BLOCK_NS[-1]}; use 'chunked'")


def block_d(bn: int) -> int:
    return 512 // bn  # a [BLOCK_D, BLOCK_N] state tile of 512 complex values


def chunk_length(length: int) -> int:
    """Steps per chunk, about sqrt(L) as a power of two in [4, 256]: the parallel chunk passes and
    the sequential carry over chunks then take about the same number of steps."""
    root = max(1, int(length**0.5))
    return max(4, min(256, 1 << (root - 1).bit_length()))


@triton.jit
def _load_params(p_ptr, q_ptr, d, n, m, N):
    off = d[:, None] * N + n[None, :]
    pn = tl.load(p_ptr + off, mask=m, other=0.0)
    qr = tl.load(q_ptr + 2 * off, mask=m, other=0.0)
    qi = tl.load(q_ptr + 2 * off + 1, mask=m, other=0.0)
    return off, pn, qr, qi


@triton.jit
def _chunk_state(
    x_ptr, p_ptr, q_ptr, s_ptr, L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm = d < D
    m = dm[:, None] & (n[None, :] < N)
    off, pn, qr, qi = _load_params(p_ptr, q_ptr, d, n, m, N)
    hr = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    hi = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    t0 = c * chunk
    for i in range(0, chunk):
        t = t0 + i
        xv = tl.load(x_ptr + (b * L + t) * D + d, mask=dm & ((d * 0 + t) < L), other=0.0).to(
            tl.float32
        )
        nr = qr * hr - qi * hi + pn * xv[:, None]
        hi = qr * hi + qi * hr
        hr = nr
    base = (b * n_chunks + c) * D * N
    tl.store(s_ptr + 2 * (base + off), hr, mask=m)
    tl.store(s_ptr + 2 * (base + off) + 1, hi, mask=m)


@triton.jit
def _chunk_carry(
    s_ptr, qc_ptr, h0_ptr, hin_ptr, D, N, n_chunks,
    HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    m = (d < D)[:, None] & (n[None, :] < N)
    off = d[:, None] * N + n[None, :]
    ar = tl.load(qc_ptr + 2 * off, mask=m, other=0.0)  # q^C
    ai = tl.load(qc_ptr + 2 * off + 1, mask=m, other=0.0)
    if HAS_H0:
        hr = tl.load(h0_ptr + 2 * (b * D * N + off), mask=m, other=0.0)
        hi = tl.load(h0_ptr + 2 * (b * D * N + off) + 1, mask=m, other=0.0)
    else:
        hr = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        hi = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(0, n_chunks):
        base = (b * n_chunks + c) * D * N
        tl.store(hin_ptr + 2 * (base + off), hr, mask=m)
        tl.store(hin_ptr + 2 * (base + off) + 1, hi, mask=m)
        sr = tl.load(s_ptr + 2 * (base + off), mask=m, other=0.0)
        si = tl.load(s_ptr + 2 * (base + off) + 1, mask=m, other=0.0)
        nr = ar * hr - ai * hi + sr
        hi = ar * hi + ai * hr + si
        hr = nr


@triton.jit
def _chunk_output(
    x_ptr, p_ptr, q_ptr, eta_ptr, hin_ptr, y_ptr, hlast_ptr, L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm = d < D
    m = dm[:, None] & (n[None, :] < N)
    off, pn, qr, qi = _load_params(p_ptr, q_ptr, d, n, m, N)
    er = tl.load(eta_ptr + 2 * off, mask=m, other=0.0)
    ei = tl.load(eta_ptr + 2 * off + 1, mask=m, other=0.0)
    base = (b * n_chunks + c) * D * N
    hr = tl.load(hin_ptr + 2 * (base + off), mask=m, other=0.0)
    hi = tl.load(hin_ptr + 2 * (base + off) + 1, mask=m, other=0.0)
    t0 = c * chunk
    for i in range(0, chunk):
        t = t0 + i
        tm = dm & ((d * 0 + t) < L)
        xv = tl.load(x_ptr + (b * L + t) * D + d, mask=tm, other=0.0).to(tl.float32)
        nr = qr * hr - qi * hi + pn * xv[:, None]
        hi = qr * hi + qi * hr
        hr = nr
        yv = tl.sum(er * hr - ei * hi, axis=1)
        tl.store(y_ptr + (b * L + t) * D + d, yv.to(y_ptr.dtype.element_ty), mask=tm)
        last = m & ((off * 0 + t) == L - 1)
        tl.store(hlast_ptr + 2 * (b * D * N + off), hr, mask=last)
        tl.store(hlast_ptr + 2 * (b * D * N + off) + 1, hi, mask=last)


@triton.jit
def _bwd_step(
    xv, dyv, inj_r, inj_i, pn, qr, qi, er, ei, lr, li, vr, vi, kr, ki,
):  # fmt: skip
    """One reverse step: (lam, nu, kappa) at t+1 -> at t (c = conj(q))."""
    nkr = lr + qr * kr + qi * ki
    nki = li + qr * ki - qi * kr
    nvr = qr * vr + qi * vi + dyv[:, None]
    nvi = qr * vi - qi * vr
    nlr = qr * lr + qi * li + er * dyv[:, None] + inj_r
    nli = qr * li - qi * lr - ei * dyv[:, None] + inj_i
    return nlr, nli, nvr, nvi, nkr, nki


@triton.jit
def _bwd_chunk_state(
    x_ptr, dy_ptr, dhl_ptr, p_ptr, q_ptr, eta_ptr, g_ptr, L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm = d < D
    m = dm[:, None] & (n[None, :] < N)
    off, pn, qr, qi = _load_params(p_ptr, q_ptr, d, n, m, N)
    er = tl.load(eta_ptr + 2 * off, mask=m, other=0.0)
    ei = tl.load(eta_ptr + 2 * off + 1, mask=m, other=0.0)
    dhr = tl.load(dhl_ptr + 2 * (b * D * N + off), mask=m, other=0.0)
    dhi = tl.load(dhl_ptr + 2 * (b * D * N + off) + 1, mask=m, other=0.0)
    zero = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    lr, li, vr, vi, kr, ki = zero, zero, zero, zero, zero, zero
    t0 = c * chunk
    for i in range(0, chunk):
        t = t0 + chunk - 1 - i
        tm = dm & ((d * 0 + t) < L)
        dyv = tl.load(dy_ptr + (b * L + t) * D + d, mask=tm, other=0.0).to(tl.float32)
        is_last = t == L - 1
        inj_r = tl.where(is_last, dhr, zero)
        inj_i = tl.where(is_last, dhi, zero)
        lr, li, vr, vi, kr, ki = _bwd_step(
            dyv, dyv, inj_r, inj_i, pn, qr, qi, er, ei, lr, li, vr, vi, kr, ki
        )
    base = 6 * ((b * n_chunks + c) * D * N + off)
    tl.store(g_ptr + base, lr, mask=m)
    tl.store(g_ptr + base + 1, li, mask=m)
    tl.store(g_ptr + base + 2, vr, mask=m)
    tl.store(g_ptr + base + 3, vi, mask=m)
    tl.store(g_ptr + base + 4, kr, mask=m)
    tl.store(g_ptr + base + 5, ki, mask=m)


@triton.jit
def _bwd_chunk_carry(
    g_ptr, qc_ptr, gin_ptr, gfirst_ptr, D, N, n_chunks, chunk,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    m = (d < D)[:, None] & (n[None, :] < N)
    off = d[:, None] * N + n[None, :]
    # conj(q)^C and C conj(q)^(C-1) come in as pairs [D, N, 4]
    ar = tl.load(qc_ptr + 4 * off, mask=m, other=0.0)
    ai = tl.load(qc_ptr + 4 * off + 1, mask=m, other=0.0)
    br = tl.load(qc_ptr + 4 * off + 2, mask=m, other=0.0)
    bi = tl.load(qc_ptr + 4 * off + 3, mask=m, other=0.0)
    zero = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    lr, li, vr, vi, kr, ki = zero, zero, zero, zero, zero, zero
    for j in range(0, n_chunks):
        c = n_chunks - 1 - j
        base = 6 * ((b * n_chunks + c) * D * N + off)
        tl.store(gin_ptr + base, lr, mask=m)
        tl.store(gin_ptr + base + 1, li, mask=m)
        tl.store(gin_ptr + base + 2, vr, mask=m)
        tl.store(gin_ptr + base + 3, vi, mask=m)
        tl.store(gin_ptr + base + 4, kr, mask=m)
        tl.store(gin_ptr + base + 5, ki, mask=m)
        # propagate through chunk c with zero input, then add its local states
        nkr = br * lr - bi * li + ar * kr - ai * ki + tl.load(g_ptr + base + 4, mask=m, other=0.0)
        nki = br * li + bi * lr + ar * ki + ai * kr + tl.load(g_ptr + base + 5, mask=m, other=0.0)
        nlr = ar * lr - ai * li + tl.load(g_ptr + base, mask=m, other=0.0)
        nli = ar * li + ai * lr + tl.load(g_ptr + base + 1, mask=m, other=0.0)
        nvr = ar * vr - ai * vi + tl.load(g_ptr + base + 2, mask=m, other=0.0)
        nvi = ar * vi + ai * vr + tl.load(g_ptr + base + 3, mask=m, other=0.0)
        lr, li, vr, vi, kr, ki = nlr, nli, nvr, nvi, nkr, nki
    first = 6 * (b * D * N + off)
    tl.store(gfirst_ptr + first, lr, mask=m)
    tl.store(gfirst_ptr + first + 1, li, mask=m)
    tl.store(gfirst_ptr + first + 2, vr, mask=m)
    tl.store(gfirst_ptr + first + 3, vi, mask=m)
    tl.store(gfirst_ptr + first + 4, kr, mask=m)
    tl.store(gfirst_ptr + first + 5, ki, mask=m)


@triton.jit
def _bwd_chunk_output(
    x_ptr, dy_ptr, dhl_ptr, p_ptr, q_ptr, eta_ptr, gin_ptr, dx_ptr, dp_ptr, dq_ptr, deta_ptr,
    L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n_db = tl.cdiv(D, BLOCK_D)
    b = (pid // n_db).to(tl.int64)
    d = (pid % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm = d < D
    m = dm[:, None] & (n[None, :] < N)
    off, pn, qr, qi = _load_params(p_ptr, q_ptr, d, n, m, N)
    er = tl.load(eta_ptr + 2 * off, mask=m, other=0.0)
    ei = tl.load(eta_ptr + 2 * off + 1, mask=m, other=0.0)
    dhr = tl.load(dhl_ptr + 2 * (b * D * N + off), mask=m, other=0.0)
    dhi = tl.load(dhl_ptr + 2 * (b * D * N + off) + 1, mask=m, other=0.0)
    base = 6 * ((b * n_chunks + c) * D * N + off)
    lr = tl.load(gin_ptr + base, mask=m, other=0.0)
    li = tl.load(gin_ptr + base + 1, mask=m, other=0.0)
    vr = tl.load(gin_ptr + base + 2, mask=m, other=0.0)
    vi = tl.load(gin_ptr + base + 3, mask=m, other=0.0)
    kr = tl.load(gin_ptr + base + 4, mask=m, other=0.0)
    ki = tl.load(gin_ptr + base + 5, mask=m, other=0.0)
    zero = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    acc_p, acc_er, acc_ei, acc_qr, acc_qi = zero, zero, zero, zero, zero
    t0 = c * chunk
    for i in range(0, chunk):
        t = t0 + chunk - 1 - i
        tm = dm & ((d * 0 + t) < L)
        dyv = tl.load(dy_ptr + (b * L + t) * D + d, mask=tm, other=0.0).to(tl.float32)
        xv = tl.load(x_ptr + (b * L + t) * D + d, mask=tm, other=0.0).to(tl.float32)
        is_last = t == L - 1
        inj_r = tl.where(is_last, dhr, zero)
        inj_i = tl.where(is_last, dhi, zero)
        lr, li, vr, vi, kr, ki = _bwd_step(
            xv, dyv, inj_r, inj_i, pn, qr, qi, er, ei, lr, li, vr, vi, kr, ki
        )
        dxv = tl.sum(pn * lr, axis=1)
        tl.store(dx_ptr + (b * L + t) * D + d, dxv.to(dx_ptr.dtype.element_ty), mask=tm)
        px = pn * xv[:, None]
        acc_p += lr * xv[:, None]
        acc_er += px * vr
        acc_ei += px * vi
        acc_qr += px * kr
        acc_qi += px * ki
    tl.atomic_add(dp_ptr + off, acc_p, mask=m)
    tl.atomic_add(deta_ptr + 2 * off, acc_er, mask=m)
    tl.atomic_add(deta_ptr + 2 * off + 1, acc_ei, mask=m)
    tl.atomic_add(dq_ptr + 2 * off, acc_qr, mask=m)
    tl.atomic_add(dq_ptr + 2 * off + 1, acc_qi, mask=m)


def _check(x, p, q, eta, h0):
    if x.dtype not in _DTYPES:
        raise TypeError(f"cema (triton): x dtype {x.dtype} is not supported (float32/16, bfloat16)")
    for name, t in (("p", p), ("q", q), ("eta", eta), ("h0", h0)):
        if t is not None and t.dtype != torch.float32:
            raise TypeError(f"cema (triton): {name} must be float32, got {t.dtype}")


def _pow_pairs(qc: torch.Tensor, k: int) -> torch.Tensor:
    """q^k as float32 pairs, computed in complex128 (complex64 powers lose k * eps of phase)."""
    return torch.view_as_real((qc.to(torch.complex128) ** k).to(torch.complex64)).contiguous()


def _forward(x, p, q, eta, h0):
    batch, length, dim = x.shape
    n_dim = p.shape[-1]
    bn = block_n(n_dim)
    bd = block_d(bn)
    chunk = chunk_length(length)
    n_chunks = triton.cdiv(length, chunk)
    grid_bd = batch * triton.cdiv(dim, bd)
    dev = x.device
    s = torch.empty(batch, n_chunks, dim, n_dim, 2, device=dev, dtype=torch.float32)
    hin = torch.empty_like(s)
    y = torch.empty_like(x)
    hlast = torch.empty(batch, dim, n_dim, 2, device=dev, dtype=torch.float32)
    qc = _pow_pairs(as_complex(q, torch.float32), chunk)
    _chunk_state[(grid_bd, n_chunks)](
        x, p, q, s, length, dim, n_dim, chunk, n_chunks, BLOCK_D=bd, BLOCK_N=bn  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    h0_arg = h0 if h0 is not None else s  # unused when HAS_H0 is False
    _chunk_carry[(grid_bd,)](
        s, qc, h0_arg, hin, dim, n_dim, n_chunks, HAS_H0=h0 is not None, BLOCK_D=bd, BLOCK_N=bn  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    _chunk_output[(grid_bd, n_chunks)](
        x, p, q, eta, hin, y, hlast, length, dim, n_dim, chunk, n_chunks, BLOCK_D=bd, BLOCK_N=bn  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    return y, hlast


def _backward(x, p, q, eta, h0, dy, dhl):
    batch, length, dim = x.shape
    n_dim = p.shape[-1]
    bn = block_n(n_dim)
    bd = block_d(bn)
    chunk = chunk_length(length)
    n_chunks = triton.cdiv(length, chunk)
    grid_bd = batch * triton.cdiv(dim, bd)
    dev = x.device
    g = torch.empty(batch, n_chunks, dim, n_dim, 6, device=dev, dtype=torch.float32)
    gin = torch.empty_like(g)
    gfirst = torch.empty(batch, dim, n_dim, 6, device=dev, dtype=torch.float32)
    dx = torch.empty_like(x)
    dp = torch.zeros(dim, n_dim, device=dev, dtype=torch.float32)
    dq = torch.zeros(dim, n_dim, 2, device=dev, dtype=torch.float32)
    deta = torch.zeros(dim, n_dim, 2, device=dev, dtype=torch.float32)
    cq = as_complex(q, torch.float32).conj()
    lead = (chunk * cq.to(torch.complex128) ** (chunk - 1)).to(torch.complex64)
    trans = torch.cat([_pow_pairs(cq, chunk), torch.view_as_real(lead)], -1)
    trans = trans.contiguous()
    _bwd_chunk_state[(grid_bd, n_chunks)](
        x, dy, dhl, p, q, eta, g, length, dim, n_dim, chunk, n_chunks, BLOCK_D=bd, BLOCK_N=bn  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    _bwd_chunk_carry[(grid_bd,)](
        g, trans, gin, gfirst, dim, n_dim, n_chunks, chunk, BLOCK_D=bd, BLOCK_N=bn  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    _bwd_chunk_output[(grid_bd, n_chunks)](
        x, dy, dhl, p, q, eta, gin, dx, dp, dq, deta, length, dim, n_dim, chunk, n_chunks,
        BLOCK_D=bd, BLOCK_N=bn,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    lam0 = torch.view_as_complex(gfirst[..., 0:2].contiguous())
    dh0 = None
    if h0 is not None:
        nu0 = torch.view_as_complex(gfirst[..., 2:4].contiguous())
        kap0 = torch.view_as_complex(gfirst[..., 4:6].contiguous())
        h0c = as_complex(h0, torch.float32).conj()
        deta = deta + torch.view_as_real((h0c * cq * nu0).sum(0))
        dq = dq + torch.view_as_real((h0c * (lam0 + cq * kap0)).sum(0))
        dh0 = torch.view_as_real(cq * lam0).contiguous()
    return dx, dp, dq, deta, dh0


class _CEMA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p, q, eta, h0):
        y, hlast = _forward(x, p, q, eta, h0)
        ctx.save_for_backward(x, p, q, eta, h0)
        return y, hlast

    @staticmethod
    def backward(ctx, dy, dhl):
        x, p, q, eta, h0 = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.to(x.dtype).contiguous()
        if dhl is None:
            dhl = torch.zeros(x.shape[0], x.shape[2], p.shape[-1], 2, device=x.device)
        dx, dp, dq, deta, dh0 = _backward(x, p, q, eta, h0, dy, dhl.float().contiguous())
        return dx, dp, dq, deta, dh0


def cema(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    eta: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_inputs(x, p, q, eta, h0)
    _check(x, p, q, eta, h0)
    x, p, q, eta = x.contiguous(), p.contiguous(), q.contiguous(), eta.contiguous()
    if h0 is not None:
        h0 = h0.contiguous()
    if x.shape[1] == 0:
        state = h0 if h0 is not None else x.new_zeros(x.shape[0], x.shape[2], p.shape[-1], 2)
        return x.clone(), state.float()
    return _CEMA.apply(x, p, q, eta, h0)


def aot_launches():
    """Every kernel at every (x dtype, BLOCK_N) the backend launches with."""
    for bn in BLOCK_NS:
        bd = block_d(bn)
        const = {"BLOCK_D": bd, "BLOCK_N": bn}
        ints = {"L": "i32", "D": "i32", "N": "i32", "chunk": "i32", "n_chunks": "i32"}
        for dt in _DTYPES.values():
            tag = f"{dt}-N{bn}"
            yield KernelLaunch(
                _chunk_state,
                {"x_ptr": f"*{dt}", "p_ptr": "*fp32", "q_ptr": "*fp32", "s_ptr": "*fp32", **ints},
                const,
                label=f"chunk_state-{tag}",
            )
            yield KernelLaunch(
                _chunk_output,
                {
                    "x_ptr": f"*{dt}", "p_ptr": "*fp32", "q_ptr": "*fp32", "eta_ptr": "*fp32",
                    "hin_ptr": "*fp32", "y_ptr": f"*{dt}", "hlast_ptr": "*fp32", **ints,
                },
                const,
                label=f"chunk_output-{tag}",
            )  # fmt: skip
            yield KernelLaunch(
                _bwd_chunk_state,
                {
                    "x_ptr": f"*{dt}", "dy_ptr": f"*{dt}", "dhl_ptr": "*fp32", "p_ptr": "*fp32",
                    "q_ptr": "*fp32", "eta_ptr": "*fp32", "g_ptr": "*fp32", **ints,
                },
                const,
                label=f"bwd_chunk_state-{tag}",
            )  # fmt: skip
            yield KernelLaunch(
                _bwd_chunk_output,
                {
                    "x_ptr": f"*{dt}", "dy_ptr": f"*{dt}", "dhl_ptr": "*fp32", "p_ptr": "*fp32",
                    "q_ptr": "*fp32", "eta_ptr": "*fp32", "gin_ptr": "*fp32", "dx_ptr": f"*{dt}",
                    "dp_ptr": "*fp32", "dq_ptr": "*fp32", "deta_ptr": "*fp32", **ints,
                },
                const,
                label=f"bwd_chunk_output-{tag}",
            )  # fmt: skip
        small = {"D": "i32", "N": "i32", "n_chunks": "i32"}
        for has_h0 in (False, True):
            yield KernelLaunch(
                _chunk_carry,
                {"s_ptr": "*fp32", "qc_ptr": "*fp32", "h0_ptr": "*fp32", "hin_ptr": "*fp32",
                 **small},
                {**const, "HAS_H0": has_h0},
                label=f"chunk_carry-N{bn}-h0={has_h0}",
            )  # fmt: skip
        yield KernelLaunch(
            _bwd_chunk_carry,
            {"g_ptr": "*fp32", "qc_ptr": "*fp32", "gin_ptr": "*fp32", "gfirst_ptr": "*fp32",
             **small, "chunk": "i32"},
            const,
            label=f"bwd_chunk_carry-N{bn}",
        )  # fmt: skip
