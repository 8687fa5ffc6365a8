"""CEMA as a long convolution (the reference repository's training path).

The recurrence unrolls to ``y = k * x + b`` with the kernel ``k_t = Re(sum_n p_n eta_n q_n^t)``
and the incoming-state bias ``b_t = Re(sum_n eta_n q_n^(t+1) h0_n)``; powers are taken as
``exp(t * log q)`` in float32/complex64 (float64 inputs: complex128). The convolution runs through
``torch.fft.rfft``/``irfft`` padded to ``2 L``; the last state ``sum_t p q^(L-1-t) x_t + q^L h0``
is a separate reduction (the reference's ``ema_hidden``). The Vandermonde ``q^t`` is built one
EMA dimension at a time and recomputed in the backward (checkpointed), so memory stays at
O(D L) instead of the reference's O(D N L).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .naive import as_complex, check_inputs, real_dtype


def _powers(log_q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """q^t = |q|^t e^{i t arg q} from real exponentials and sines (faster than a complex exp)."""
    return torch.polar(torch.exp(log_q.real[..., None] * t), log_q.imag[..., None] * t)


def _kernel_and_state(x, p, qc, etac, h0c):
    """Kernel k [D, L], bias b [B, D, L] (or None), last state [B, D, N] complex."""
    _batch, dim, length = x.shape
    t = torch.arange(length, device=x.device, dtype=p.dtype)
    log_q = torch.log(qc)
    k = torch.zeros(dim, length, dtype=p.dtype, device=x.device)
    states, bias = [], None
    for n in range(p.shape[-1]):
        pw = _powers(log_q[:, n], t)  # [D, L]: q^t
        k = k + (p[:, n, None] * etac[:, n, None] * pw).real
        # sum_t q^(L-1-t) x_t for every batch row: a real x against complex powers
        flipped = pw.flip(-1)
        s = torch.complex((x * flipped.real).sum(-1), (x * flipped.imag).sum(-1))
        s = p[:, n] * s
        if h0c is not None:
            q_l = torch.exp(log_q[:, n] * length)
            s = s + q_l * h0c[:, :, n]
            term = (etac[:, n, None] * qc[:, n, None] * pw)[None] * h0c[:, :, n, None]
            bias = term.real if bias is None else bias + term.real
        states.append(s)
    return k, bias, torch.stack(states, -1)


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
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, p, q, eta, h0)
    ):
        k, bias, state = checkpoint(_kernel_and_state, xt, pr, qc, etac, h0c, use_reentrant=False)
    else:
        k, bias, state = _kernel_and_state(xt, pr, qc, etac, h0c)
    n_fft = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(xt, n=n_fft) * torch.fft.rfft(k, n=n_fft), n=n_fft)
    y = y[..., :length]
    if bias is not None:
        y = y + bias
    return y.transpose(1, 2).to(x.dtype), torch.view_as_real(state).contiguous()
