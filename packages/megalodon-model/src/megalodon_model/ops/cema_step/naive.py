"""One CEMA step for decoding: ``h = q h + p x_t``, ``y_t = Re(sum_n eta h)`` (the recurrence of
``ops/cema/naive.py`` for a single token)."""

from __future__ import annotations

import torch

from ..cema.naive import as_complex, check_inputs, real_dtype


def cema_step(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    eta: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, D] one token, ``h`` [B, D, N, 2] the state before it -> (y [B, D], new state)."""
    if x.dim() != 2:
        raise ValueError(f"cema_step: x must be one token [batch, channels], got {tuple(x.shape)}")
    check_inputs(x[:, None], p, q, eta, h)
    rd = real_dtype(x)
    hc = as_complex(h, rd)
    hc = as_complex(q, rd) * hc + p.to(rd) * x.to(rd)[..., None]
    y = (as_complex(eta, rd) * hc).real.sum(-1)
    return y.to(x.dtype), torch.view_as_real(hc).contiguous()
