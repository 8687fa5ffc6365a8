"""Timestep normalization (the spec): a causal, cumulative group norm with streaming state.

For batch row b, group g of ``d_g = D / G`` features and every valid (not padded) position t,
the statistics cover the prior (``prev_count`` tokens of mean ``prev_mean`` and variance
``prev_var``) and every valid token up to and including t, each token weighing its d_g features:

    n_t   = prev_count + #valid tokens <= t
    mu_t  = (prev_count * prev_mean + sum_{i<=t} a_i) / n_t              a_i = mean of x_i,g
    var_t = (prev_count * (prev_var + prev_mean^2) + sum_{i<=t} (v_i + a_i^2)) / n_t - mu_t^2
                                                                         v_i = variance of x_i,g
    y_t   = (x_t - mu_t) / sqrt(var_t + eps) * weight + bias             (0 at padded positions)

which is the Welford merge the reference kernel runs token by token. Computed here with
cumulative sums of values shifted by a per-row constant (the prior mean, or the first token's
mean without a prior), so a large common offset does not cancel; float32 math (float64 for
float64 inputs). Returns (y, count, mean, var): the state after the last position, to pass as
``prev_*`` for the next piece. ``padding_mask`` is True at padded positions (the reference's
convention). ``weight`` is the scale as applied (the module adds the "+1" of its
parameterization before calling).
"""

from __future__ import annotations

import torch


def timestep_norm(
    x: torch.Tensor,
    prev_count: torch.Tensor,
    prev_mean: torch.Tensor,
    prev_var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, length, dim = x.shape
    groups = prev_mean.shape[-1]
    if dim % groups:
        raise ValueError(f"timestep_norm: {groups} groups do not divide {dim} features")
    rd = torch.float64 if x.dtype == torch.float64 else torch.float32
    xg = x.to(rd).view(batch, length, groups, dim // groups)
    a = xg.mean(-1)  # [B, L, G] per-token group mean
    v = (xg - a[..., None]).pow(2).mean(-1)  # per-token group variance
    valid = (
        torch.ones(batch, length, dtype=torch.bool, device=x.device)
        if padding_mask is None
        else ~padding_mask.to(torch.bool)
    )
    w = valid.to(rd)[..., None]
    n0 = prev_count.to(rd)[:, None, None]  # [B, 1, 1]
    m0, v0 = prev_mean.to(rd)[:, None], prev_var.to(rd)[:, None]  # [B, 1, G]
    # shift: the prior's mean, or the first valid token's mean without a prior
    first = torch.gather(a, 1, valid.to(torch.int64).argmax(1)[:, None, None].expand(-1, 1, groups))
    shift = torch.where(n0 > 0, m0, first).detach()
    ash, msh = a - shift, m0 - shift
    n = n0 + torch.cumsum(w, 1)  # [B, L, 1]
    safe_n = n.clamp_min(1.0)
    s1 = n0 * msh + torch.cumsum(w * ash, 1)
    s2 = n0 * (v0 + msh.pow(2)) + torch.cumsum(w * (v + ash.pow(2)), 1)
    mu_sh = s1 / safe_n
    var = (s2 / safe_n - mu_sh.pow(2)).clamp_min(0.0)
    mu = mu_sh + shift
    rstd = torch.rsqrt(var + eps)
    y = (xg - mu[..., None]) * rstd[..., None]
    y = y.reshape(batch, length, dim) * weight.to(rd) + bias.to(rd)
    y = torch.where(valid[..., None], y, torch.zeros((), dtype=rd, device=x.device))
    count = prev_count + valid.sum(1).to(prev_count.dtype)
    if length:
        mean_out, var_out = mu[:, -1], var[:, -1]
        # the state of a row with no token and no prior stays what came in
        keep = (count == 0)[:, None]
        mean_out = torch.where(keep, prev_mean.to(rd), mean_out)
        var_out = torch.where(keep, prev_var.to(rd), var_out)
    else:
        mean_out, var_out = prev_mean.to(rd), prev_var.to(rd)
    return y.to(x.dtype), count, mean_out.to(prev_mean.dtype), var_out.to(prev_var.dtype)
