"""The RL arithmetic, written out on ``[batch, response tokens]`` tensors with a 0/1 mask.

Token ``t`` of a response has log-probability ``logp[:, t]`` under the policy, ``ref[:, t]``
under the reference, and a value estimate ``values[:, t]`` of the state before it. Every function
here is checked against hand-computed numbers in the tests.
"""

from __future__ import annotations

import torch

from .distributed import all_sum


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return masked_sum(x, mask) / mask.sum().clamp(min=1)
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens.
    ``k1``: log pi - log ref (unbiased); ``k3``: exp(ref - pi) - (ref - pi) - 1 (non-negative)."""
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def whiten(x: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over every element on every rank (``shift_mean=False`` keeps the mean)."""
    n = all_sum(torch.tensor(float(x.numel()), dtype=torch.float64))
    s = all_sum(x.detach().double().sum())
    mean = s / n
    var = all_sum(((x.detach().double() - mean) ** 2).sum()) / (n - 1).clamp(min=1)
    out = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + eps)
    return out if shift_mean else out + mean.to(x.dtype)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Whiten the masked entries over every rank; masked-out entries become 0."""
    m = mask.to(torch.float64)
    n = all_sum(m.sum())
    mean = all_sum((x.detach().double() * m).sum()) / n
    var = all_sum((((x.detach().double() - mean) ** 2) * m).sum()) / (n - 1).clamp(min=1)
    return ((x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + eps)) * mask


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 of each row of a right-padded mask."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def token_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    kl_mode: str = "token",
    reward_weight: float = 1.0,
) -> torch.Tensor:
    """Per-token rewards: the weighted score on the last token and the KL penalty either on
    every token (``token``) or summed onto the last token (``sequence``)."""
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = last_index(mask)
    out = torch.zeros_like(kl)
    if kl_mode == "token":
        out = -beta * kl * mask
    elif kl_mode == "sequence":
        out[rows, last] = -beta * masked_sum(kl, mask, -1)
    else:
        raise ValueError(f"unknown kl_mode {kl_mode!r} (token or sequence)")
    out[rows, last] += reward_weight * scores.to(out.dtype)
    return out


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s within each (right-padded) response."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] * mask[:, t] + gamma * running * mask[:, t]
        out[:, t] = running
    return out


def rloo_advantages(seq_returns: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out baseline over groups of ``k`` consecutive samples of one prompt:
    A_i = R_i - mean_{j != i} R_j."""
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    g = seq_returns.view(-1, k)
    baseline = (g.sum(-1, keepdim=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: ``(advantages, returns = advantages + values)``;
    the value after a response's last token is 0."""
    t_len = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(t_len)):
        next_mask = mask[:, t + 1] if t + 1 < t_len else torch.zeros_like(mask[:, 0])
        next_value = values[:, t + 1] * next_mask if t + 1 < t_len else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        adv[:, t] = running * mask[:, t]
    return adv, (adv + values) * mask


def reinforce_loss(
    logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, n_sequences: float
) -> torch.Tensor:
    """-sum_t A_t log pi(y_t) summed per sequence, divided by the global sequence count."""
    return -masked_sum(logp * advantages.detach(), mask) / n_sequences


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float,
    n_tokens: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (token mean over the global token count) and the clipped
    fraction of tokens."""
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv
    loss = -masked_sum(torch.minimum(unclipped, clipped), mask) / n_tokens
    frac = masked_sum((clipped < unclipped).to(logp.dtype), mask) / n_tokens
    return loss, frac.detach()


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    n_tokens: float,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """0.5 (V - G)^2 token mean over the global token count; with ``clip``, PPO's clipped form
    max((V - G)^2, (V_old + clip(V - V_old) - G)^2)."""
    err = (values - returns.detach()) ** 2
    if clip is not None and old_values is not None:
        v_clip = old_values.detach() + (values - old_values.detach()).clamp(-clip, clip)
        err = torch.maximum(err, (v_clip - returns.detach()) ** 2)
    return 0.5 * masked_sum(err, mask) / n_tokens
