"""CEMA as a chunked parallel scan in plain PyTorch (runs everywhere; the CPU default).

The sequence is cut into chunks of ``CHUNK`` steps (the last one zero-padded). Inside a chunk the
output is a causal Toeplitz matmul with the kernel ``k_j = Re(sum_n p eta q^j)`` plus the
contribution ``Re(sum_n eta q^(i+1) H_c)`` of the state ``H_c`` entering the chunk; each chunk's
own end state ``s_c = sum_j p q^(C-1-j) x_j`` is one more matmul, and the states entering the
chunks follow ``H_(c+1) = q^C H_c + s_c``, a short loop over chunks. The last state is advanced
from the last chunk's entering state over its real (unpadded) steps only, so any length works.
All math in float32 (float64 for float64 inputs): matmuls are real (complex parts split).
"""

from __future__ import annotations

import torch

from .naive import as_complex, check_inputs, real_dtype

CHUNK = 64


def chunk_size(length: int) -> int:
    """Chunk length: ``CHUNK``, or the sequence's length rounded up to a power of two if shorter."""
    return min(CHUNK, 1 << max(0, (length - 1).bit_length()))


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
    n_dim = p.shape[-1]
    if length == 0:
        state = h0.to(rd) if h0 is not None else torch.zeros(batch, dim, n_dim, 2, dtype=rd)
        return x.clone(), state.contiguous()
    c = chunk_size(length)
    n_chunks = -(-length // c)
    pad = n_chunks * c - length
    xs = x.to(rd)
    if pad:
        xs = torch.nn.functional.pad(xs, (0, 0, 0, pad))
    xc = xs.view(batch, n_chunks, c, dim)
    pr, qc, etac = p.to(rd), as_complex(q, rd), as_complex(eta, rd)
    j = torch.arange(c, device=x.device, dtype=rd)
    # q^j from float64 logarithms (|q|^j e^{i j arg q}): in float32 the rounding of log q grows
    # with j and, through q^C over many chunks, with the sequence length
    log_q = torch.log(as_complex(q, torch.float64))
    j64 = j.double()
    qpow = torch.polar(torch.exp(log_q.real[..., None] * j64), log_q.imag[..., None] * j64)
    qpow = qpow.to(qc.dtype)
    # intra-chunk causal Toeplitz matrix T[d, i, j] = k[d, i - j] (i >= j)
    k = ((pr * etac)[..., None] * qpow).real.sum(1)  # [D, C]
    lag = j[:, None] - j[None, :]
    toeplitz = k[:, lag.clamp_min(0).long()] * (lag >= 0)  # [D, C, C]
    y = torch.einsum("bcjd,dij->bcid", xc, toeplitz)
    # each chunk's own end state (zero entering state): W[d, n, j] = p q^(C-1-j)
    w = pr[..., None] * qpow.flip(-1)
    s = torch.complex(
        torch.einsum("bcjd,dnj->bcdn", xc, w.real), torch.einsum("bcjd,dnj->bcdn", xc, w.imag)
    )
    q_c = qpow[..., -1] * qc  # q^C
    h = (
        as_complex(h0, rd)
        if h0 is not None
        else torch.zeros(batch, dim, n_dim, dtype=qc.dtype, device=x.device)
    )
    entering = []
    for i in range(n_chunks):
        entering.append(h)
        if i + 1 < n_chunks:
            h = q_c * h + s[:, i]
    hs = torch.stack(entering, 1)  # [B, nc, D, N]
    # contribution of the entering state: E[d, n, i] = eta q^(i+1)
    e = etac[..., None] * qpow * qc[..., None]
    y = y + torch.einsum("bcdn,dni->bcid", hs.real, e.real)
    y = y - torch.einsum("bcdn,dni->bcid", hs.imag, e.imag)
    y = y.reshape(batch, n_chunks * c, dim)[:, :length]
    # last state: the last chunk's entering state advanced over its real steps only
    r = length - (n_chunks - 1) * c
    last = xc[:, -1, :r]  # [B, r, D]
    w_r = pr[..., None] * qpow[..., :r].flip(-1)  # p q^(r-1-j)
    s_r = torch.complex(
        torch.einsum("bjd,dnj->bdn", last, w_r.real), torch.einsum("bjd,dnj->bdn", last, w_r.imag)
    )
    q_r = qpow[..., r - 1] * qc  # q^r
    state = q_r * hs[:, -1] + s_r
    return y.to(x.dtype), torch.view_as_real(state).contiguous()
