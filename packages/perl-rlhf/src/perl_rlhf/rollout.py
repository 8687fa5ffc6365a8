"""One rollout path for every algorithm: sample with the policy, then score the sequences on
the same base -- policy and reference log-probabilities (adapters on / off), values (value
adapter + head) and rewards (reward adapter + head, or a reward function)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .data import pad
from .model import PerlModel

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class Rollout:
    """A batch of sampled responses. ``prompt_ids`` are left-padded to ``P`` columns and the
    responses right-padded to ``T``; ``response_mask`` is 1 up to and including the first
    end-of-sequence token."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    values: torch.Tensor | None = None
    scores: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], 1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], 1)

    def select(self, rows) -> Rollout:
        pick = {
            k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()
        }
        return Rollout(**pick)


def response_mask(response_ids: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 up to and including the first end-of-sequence token of each row, 0 after it."""
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= response_ids == e
    before = torch.cumsum(is_eos.long(), 1) - is_eos.long()  # eos seen strictly before t
    return (before == 0).long()


def token_logprobs(
    model: PerlModel,
    role: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities ``[B, T]`` of the response tokens under ``role`` at ``temperature``
    (and the entropy of each next-token distribution). The output head runs on the response
    positions only."""
    hidden = model.hidden_states(role, input_ids, attention_mask)
    h = hidden[:, prompt_len - 1 : -1]
    logits = model.lm_head(role)(h).float() / temperature
    logp_all = torch.log_softmax(logits, -1)
    targets = input_ids[:, prompt_len:]
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def response_values(model: PerlModel, rollout: Rollout) -> torch.Tensor:
    """Value of the state before each response token, ``[B, T]``."""
    p = rollout.prompt_ids.shape[1]
    v = model.values(rollout.input_ids, rollout.attention_mask)
    return v[:, p - 1 : -1]


@torch.no_grad()
def sample(
    model: PerlModel,
    prompts: Sequence[Sequence[int]],
    *,
    pad_token: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.7,
    top_k: int = 0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
) -> Rollout:
    """Sample one response per prompt id list with the policy."""
    device = next(model.parameters()).device
    ids, mask = pad(prompts, pad_token, left=True)
    ids, mask = ids.to(device), mask.to(device)
    out = model.generate(
        ids,
        mask,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        pad_token_id=pad_token,
        eos_token_id=list(eos_ids),
    )
    resp = out[:, ids.shape[1] :]
    rmask = response_mask(resp, eos_ids)
    width = max(1, int(rmask.sum(1).max()))
    resp, rmask = resp[:, :width], rmask[:, :width]
    resp = torch.where(rmask.bool(), resp, torch.full_like(resp, pad_token))
    return Rollout(ids, mask, resp, rmask)


@torch.no_grad()
def score_rollout(
    model: PerlModel,
    rollout: Rollout,
    *,
    temperature: float = 0.7,
    need_values: bool = True,
    reward_fn: RewardFn | None = None,
    texts: tuple[list[str], list[str]] | None = None,
) -> Rollout:
    """Fill in log-probs (policy, reference), entropy, values and reward scores."""
    ids, mask, p = rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1]
    rollout.logprobs, rollout.entropy = token_logprobs(
        model, "policy", ids, mask, p, temperature=temperature, with_entropy=True
    )
    rollout.ref_logprobs, _ = token_logprobs(
        model, "reference", ids, mask, p, temperature=temperature
    )
    if need_values:
        rollout.values = response_values(model, rollout).float()
    if reward_fn is not None:
        assert texts is not None
        rollout.scores = torch.tensor(
            [float(x) for x in reward_fn(*texts)], dtype=torch.float32, device=ids.device
        )
    else:
        rollout.scores = model.scores(ids, mask).float()
    return rollout
