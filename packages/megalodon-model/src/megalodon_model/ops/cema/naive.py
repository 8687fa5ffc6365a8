"""CEMA, the sequential recurrence (the spec).

Per channel d and EMA dimension n (complex state h, real input x):

    h_t = q * h_{t-1} + p * x_t          (h_{-1} = h0, zeros when None)
    y_t = Re(sum_n eta_n * h_t,n)

``p`` [D, N] is real (alpha in the reference code), ``q`` [D, N, 2] and ``eta`` [D, N, 2] are
complex numbers stored as (real, imag) pairs, ``x`` is [B, L, D]. Returns ``y`` [B, L, D] in
``x``'s dtype and the last state ``h_{L-1}`` [B, D, N, 2] (float32; float64 for float64 inputs),
so a sequence can be processed in pieces: ``cema(x2, ..., h0=cema(x1, ...)[1])``.
"""

from __future__ import annotations

import torch


def real_dtype(x: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype of the CEMA math: float64 for float64 inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def as_complex(pairs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(real, imag) pairs in the last dim -> complex tensor of the matching precision."""
    pairs = pairs.to(dtype)
    return torch.complex(pairs[..., 0], pairs[..., 1])


def check_inputs(x, p, q, eta, h0) -> None:
    """One-line ``ValueError`` for shapes that do not fit together (every backend calls this)."""
    if x.dim() != 3:
        raise ValueError(f"cema: x must be [batch, length, channels], got {tuple(x.shape)}")
    dim = x.shape[-1]
    if p.dim() != 2 or p.shape[0] != dim:
        raise ValueError(
            f"cema: p must be [{dim}, N] for x with {dim} channels, got {tuple(p.shape)}"
        )
    want = (dim, p.shape[1], 2)
    for name, t in (("q", q), ("eta", eta)):
        if tuple(t.shape) != want:
            raise ValueError(f"cema: {name} must be {list(want)}, got {list(t.shape)}")
    if h0 is not None and tuple(h0.shape) != (x.shape[0], *want):
        raise ValueError(f"cema: h0 must be {[x.shape[0], *want]}, got {list(h0.shape)}")


def cema(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    eta: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex EMA of ``x`` [B, L, D] by the step-by-step recurrence; returns (y, last state)."""
    check_inputs(x, p, q, eta, h0)
    rd = real_dtype(x)
    batch, length, dim = x.shape
    qc, etac = as_complex(q, rd), as_complex(eta, rd)
    pr = p.to(rd)
    if h0 is None:
        h = torch.zeros(batch, dim, p.shape[-1], dtype=qc.dtype, device=x.device)
    else:
        h = as_complex(h0, rd)
    xs = x.to(rd)
    ys = []
    for t in range(length):
        h = qc * h + pr * xs[:, t, :, None]
        ys.append((etac * h).real.sum(-1))
    y = torch.stack(ys, 1) if ys else xs.new_zeros(batch, 0, dim)
    return y.to(x.dtype), torch.view_as_real(h).contiguous()
