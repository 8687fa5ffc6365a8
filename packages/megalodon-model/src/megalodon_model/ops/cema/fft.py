"""CEMA as a long convolution (the reference repository's training path).

The recurrence unrolls to ``y = k * x + b`` with the kernel ``k_t = Re(sum_n p_n eta_n q_n^t)``
and the incoming-state bias ``b_t = Re(sum_n eta_n q_n^(t+1) h0_n)``; powers are taken as
``exp(t * log q)`` in float32/complex64 (float64 inputs: complex128). The convolution runs through
``torch.fft.rfft``/``irfft`` padded to ``2 L``; the last state ``sum_t p q^(L-1-t) x_t + q^L h0``
is a separate reduction (the reference's ``ema_hidden``). The Vandermonde ``q^t`` is never
built: ``q^t = q^(t mod C) (q^C)^(t div C)`` with C = sqrt(L), so every sum over the EMA dimension
is a batched matmul of two small power tables (taken from float64 logarithms: float32 rounding of
``log q`` would grow with t). Memory stays O(D L) instead of the reference's O(D N L).
"""

from __future__ import annotations

import math

import torch

from .naive import as_complex, check_inputs, real_dtype


def _tables(qc64: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """q^r for r < C and (q^C)^m for m < ceil(L/C) (so q^t = q^(t mod C) (q^C)^(t div C)),
    from float64 logarithms: float32 rounding of log q would grow with t."""
    c = max(1, math.isqrt(length))
    m = -(-length // c)
    log_q = torch.log(qc64)
    r = torch.arange(c, dtype=torch.float64, device=qc64.device)
    mm = torch.arange(m, dtype=torch.float64, device=qc64.device) * c
    small = torch.polar(torch.exp(log_q.real[..., None] * r), log_q.imag[..., None] * r)
    big = torch.polar(torch.exp(log_q.real[..., None] * mm), log_q.imag[..., None] * mm)
    return small, big, c


def _kernel_and_state(x, p, qc, etac, h0c, q64):
    """Kernel k [D, L], bias b [B, D, L] (or None), last state [B, D, N] complex.

    Every sum over the EMA dimension n of coefficient * q^t is a batched matmul of the two
    power tables (one row of (q^C)^m per block of C steps): no [D, N, L] tensor is built.
    """
    batch, dim, length = x.shape
    small, big, c = _tables(q64, length)
    cd = qc.dtype
    small, big = small.to(cd), big.to(cd)  # [D, N, C], [D, N, M]
    m = big.shape[-1]
    # k[d, m*C + r] = Re(sum_n (p eta)_n (q^C)^m q^r)
    a = (p * etac)[..., None] * small  # [D, N, C]
    k = torch.bmm(big.transpose(1, 2), a).real.reshape(dim, m * c)[:, :length]
    bias = None
    if h0c is not None:
        # b[b, d, t] = Re(sum_n (eta q h0)_n q^t)
        coef = (etac * qc)[None] * h0c  # [B, D, N]
        left = (coef[..., None] * big[None]).transpose(2, 3).reshape(batch * dim, m, -1)
        right = small[None].expand(batch, -1, -1, -1).reshape(batch * dim, -1, c)
        bias = torch.bmm(left, right).real.reshape(batch, dim, m * c)[..., :length]
    # last state: sum_s x_(L-1-s) q^s, s = m*C + r, then * p, + q^L h0
    pad = m * c - length
    xr = torch.nn.functional.pad(x.flip(-1), (0, pad)).reshape(batch, dim, m, c)
    xr = xr.permute(1, 0, 2, 3).reshape(dim, batch * m, c)  # [D, B*M, C]
    part = torch.complex(
        torch.bmm(xr, small.real.transpose(1, 2)), torch.bmm(xr, small.imag.transpose(1, 2))
    )  # [D, B*M, N]
    part = part.reshape(dim, batch, m, -1)
    state = (part * big.transpose(1, 2)[:, None]).sum(2).transpose(0, 1) * p  # [B, D, N]
    if h0c is not None:
        q_l = (big[..., -1] * small[..., -1] * qc) if m * c == length else _power(q64, length, cd)
        state = state + q_l * h0c
    return k, bias, state


def _power(q64: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    log_q = torch.log(q64)
    return torch.polar(torch.exp(log_q.real * n), log_q.imag * n).to(dtype)


def cema(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    eta: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_inputs(x, p, q, eta, h0)
    rd = real_dtype(x)
    batch, length, dim = x.shape
    if length == 0:
        state = h0.to(rd) if h0 is not None else torch.zeros(batch, dim, p.shape[-1], 2, dtype=rd)
        return x.clone(), state.contiguous()
    xt = x.to(rd).transpose(1, 2).contiguous()  # [B, D, L]
    pr, qc, etac = p.to(rd), as_complex(q, rd), as_complex(eta, rd)
    h0c = as_complex(h0, rd) if h0 is not None else None
    q64 = as_complex(q.detach(), torch.float64)
    if q.requires_grad:  # the float64 tables carry no gradient: attach d/dq through q itself
        q64 = q64 + (as_complex(q, torch.float64) - as_complex(q, torch.float64).detach())
    k, bias, state = _kernel_and_state(xt, pr, qc, etac, h0c, q64)
    n_fft = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(xt, n=n_fft) * torch.fft.rfft(k, n=n_fft), n=n_fft)
    y = y[..., :length]
    if bias is not None:
        y = y + bias
    return y.transpose(1, 2).to(x.dtype), torch.view_as_real(state).contiguous()
