"""Top-k routing, the expert sort, and the router auxiliary losses.

Everything here stays on the device: no ``.item()``, ``.tolist()`` or data-dependent shapes, so
the hot path never waits for the GPU and ``torch.compile`` can trace it whole.

Vocabulary: ``T`` tokens, each sent to ``k`` experts, gives ``P = T * k`` *pairs*; pair
``p = t * k + j`` is token ``t``'s ``j``-th choice. "Pair order" lays pairs out as ``[T, k]``;
"sorted order" groups them by expert (stable, so within an expert by pair index).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Routing(NamedTuple):
    """Where each (token, choice) pair goes, grouped by expert.

    ``sorted_pair[i]`` is the pair index of the ``i``-th row in sorted order;
    ``expert_offsets[e]`` (int32) is the end of expert ``e``'s rows in sorted order (its start is
    ``expert_offsets[e - 1]``, or 0), the ``offs`` layout of ``torch._grouped_mm``.
    """

    sorted_pair: torch.Tensor  # [P] int64
    expert_offsets: torch.Tensor  # [E] int32, cumulative ends
    top_k: int
    num_experts: int
    # [P] int32, the sorted row of each pair (inverse of sorted_pair); Triton routing only
    pair_position: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.sorted_pair.numel()

    def expert_counts(self) -> torch.Tensor:
        """Pairs per expert ``[E]`` (int32), from the offsets."""
        return torch.diff(self.expert_offsets, prepend=self.expert_offsets.new_zeros(1))


def sort_by_expert(expert_index: torch.Tensor, num_experts: int) -> Routing:
    """Group the pairs of ``expert_index`` (``[T, k]`` expert ids) by expert, without host sync."""
    if expert_index.dim() != 2:
        raise ValueError(f"expert_index must be [tokens, k], got shape {tuple(expert_index.shape)}")
    top_k = expert_index.shape[1]
    flat = expert_index.reshape(-1)
    sorted_expert, sorted_pair = torch.sort(flat, stable=True)
    boundaries = torch.arange(num_experts, device=flat.device, dtype=sorted_expert.dtype)
    offsets = torch.searchsorted(sorted_expert, boundaries, right=True).to(torch.int32)
    return Routing(sorted_pair, offsets, top_k, num_experts)


class TopKRouting(NamedTuple):
    logits: torch.Tensor  # [T, E] float32 (the router's dtype on the fused Triton MoE path)
    gates: torch.Tensor  # [T, k] in the input dtype, each row sums to 1
    expert_index: torch.Tensor  # [T, k] int64
    routing: Routing


def top_k_route(logits: torch.Tensor, top_k: int, gate_dtype: torch.dtype) -> TopKRouting:
    """JetMoE gating: softmax over the top-k logits (= the renormalised full softmax)."""
    num_experts = logits.shape[-1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(
            f"top_k={top_k} must be between 1 and the number of experts ({num_experts})"
        )
    logits = logits.float()
    top_logits, expert_index = logits.topk(top_k, dim=-1)
    gates = torch.softmax(top_logits, dim=-1).to(gate_dtype)
    return TopKRouting(logits, gates, expert_index, sort_by_expert(expert_index, num_experts))


class RouterStatistics(NamedTuple):
    """The sums one router's losses are built from; summing them over token shards (data-parallel
    ranks) and then forming the losses gives exactly the losses of the whole batch."""

    prob_sum: torch.Tensor  # [E] float32, full-softmax probability mass per expert
    count_sum: torch.Tensor  # [E] float32, (token, choice) assignments per expert
    z_sum: torch.Tensor  # [] float32, sum over tokens of logsumexp(logits)^2
    tokens: torch.Tensor  # [] float32, tokens counted (mask sum)


def router_statistics(
    logits: torch.Tensor, expert_index: torch.Tensor, mask: torch.Tensor | None = None
) -> RouterStatistics:
    """Per-expert sums of one router over its tokens; ``mask`` (``[T]``, 1 = real token)."""
    num_experts = logits.shape[-1]
    logits = logits.float()
    weight = logits.new_ones(logits.shape[0]) if mask is None else mask.to(logits.dtype)
    probs = torch.softmax(logits, dim=-1)
    onehot = F.one_hot(expert_index, num_experts).to(probs.dtype).sum(1)  # [T, E]
    z = torch.logsumexp(logits, dim=-1).square()
    return RouterStatistics(
        (probs * weight[:, None]).sum(0),
        (onehot * weight[:, None]).sum(0),
        (z * weight).sum(),
        weight.sum(),
    )


def balance_from_statistics(stats: RouterStatistics) -> torch.Tensor:
    """``N * sum_i f_i * P_i`` from the sums (see ``load_balancing_loss``)."""
    prob_share = stats.prob_sum / stats.prob_sum.sum().clamp_min(1e-9)
    count_share = stats.count_sum / stats.count_sum.sum().clamp_min(1e-9)
    return stats.prob_sum.shape[0] * (prob_share * count_share).sum()


def z_loss_from_statistics(stats: RouterStatistics) -> torch.Tensor:
    """Mean over tokens of ``logsumexp(x)^2`` from the sums (see ``router_z_loss``)."""
    return stats.z_sum / stats.tokens.clamp_min(1.0)


def load_balancing_loss(
    logits: torch.Tensor, expert_index: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch load balancing for one router (paper eq. 11; JetMoE ``compute_aux_loss``).

    ``N * sum_i f_i * P_i``: ``f_i`` = share of the ``T * k`` assignments that went to expert
    ``i``, ``P_i`` = share of the full-softmax router probability. 1.0 when perfectly balanced.
    ``mask`` (``[T]``, 1 = real token) leaves padding out of both shares.
    """
    return balance_from_statistics(router_statistics(logits, expert_index, mask))


def router_z_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Router z-loss for one router (paper eq. 12): mean over tokens of ``logsumexp(x)^2``."""
    z = torch.logsumexp(logits.float(), dim=-1).square()
    if mask is None:
        return z.mean()
    weight = mask.to(z.dtype)
    return (z * weight).sum() / weight.sum().clamp_min(1.0)


def all_reduce_statistics(stats: list[RouterStatistics], group=None) -> list[RouterStatistics]:
    """Sum every router's statistics over the ranks of ``group`` (one ``all_reduce``), so the
    losses formed from them equal the losses of the whole global batch on every rank.

    Gradients: each rank's own contribution keeps its autograd graph, scaled by the world size,
    and the other ranks' sums enter as constants. Data-parallel training (FSDP, DDP) averages
    gradients over the ranks, which turns that back into exactly the gradient of the global loss.
    """
    import torch.distributed as dist

    world = dist.get_world_size(group)
    if world == 1 or not stats:
        return stats
    sizes = [t.numel() for s in stats for t in s]
    flat = torch.cat([t.reshape(-1) for s in stats for t in s])
    total = flat.detach().clone()
    dist.all_reduce(total, group=group)
    flat = total + world * (flat - flat.detach())  # value: global sum; gradient: world x own
    parts = iter(flat.split(sizes))
    out = []
    for s in stats:
        fields = [next(parts).reshape(t.shape) for t in s]
        out.append(RouterStatistics(*fields))
    return out


__all__ = [
    "RouterStatistics",
    "Routing",
    "TopKRouting",
    "all_reduce_statistics",
    "balance_from_statistics",
    "load_balancing_loss",
    "router_statistics",
    "router_z_loss",
    "sort_by_expert",
    "top_k_route",
    "z_loss_from_statistics",
]
