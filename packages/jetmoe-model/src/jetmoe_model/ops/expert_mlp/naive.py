"""Reference SwiGLU expert MLP (the spec of every backend), from the reference expert linear.

``expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets)`` computes, for every (token, choice)
pair ``p = t * k + j`` routed to expert ``e(p)``::

    g, u = split(x[t] @ w_in[e(p)].T)        w_in: [E, 2 * F, D], gate rows first (released)
    y[p] = (silu(g) * u) @ w_out[e(p)].T     w_out: [E, D, F]

Output ``[T * k, D]`` in pair order. ``moe_layer`` is the whole MoE MLP after the router matmul
(routing, this MLP, the gate-weighted combine, bias): the spec of the fused Triton layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...routing import TopKRouting
from ..experts import naive as linear


def check_mlp_args(x, w_in, w_out, sorted_pair, expert_offsets) -> None:
    linear.check_args(x, w_in, sorted_pair, expert_offsets, "token", "sorted")
    if w_in.shape[1] % 2:
        raise ValueError(f"w_in must stack [gate; up] rows, got odd width {w_in.shape[1]}")
    e, d, f = w_out.shape
    if (e, d, 2 * f) != (w_in.shape[0], w_in.shape[2], w_in.shape[1]):
        raise ValueError(
            f"w_out shape {tuple(w_out.shape)} does not match w_in {tuple(w_in.shape)} "
            "(expected [E, D, F] for w_in [E, 2F, D])"
        )


def swiglu_experts(x, w_in, w_out, sorted_pair, expert_offsets, linear_fn) -> torch.Tensor:
    """The SwiGLU expert MLP with ``linear_fn`` (an ``expert_linear`` implementation) for the two
    expert matmuls and the activation in PyTorch."""
    check_mlp_args(x, w_in, w_out, sorted_pair, expert_offsets)
    h = linear_fn(x, w_in, sorted_pair, expert_offsets, input_order="token", output_order="sorted")
    gate, up = h.chunk(2, dim=-1)
    act = F.silu(gate) * up
    return linear_fn(
        act, w_out, sorted_pair, expert_offsets, input_order="sorted", output_order="pair"
    )


def expert_mlp(
    x: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
) -> torch.Tensor:
    """``[T * k, D]`` in pair order, through the reference expert linear (the loop)."""
    return swiglu_experts(x, w_in, w_out, sorted_pair, expert_offsets, linear.expert_linear)


def combine(y_pairs: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of each token's k expert outputs: ``[T * k, D], [T, k] -> [T, D]``."""
    tokens, top_k = gates.shape
    return (y_pairs.view(tokens, top_k, y_pairs.shape[-1]) * gates.unsqueeze(-1)).sum(1)


def moe_layer_with(x, logits, w_in, w_out, bias, top_k, linear_fn):
    """The MoE layer after the router matmul: route, SwiGLU experts, combine, bias."""
    from ...routing import top_k_route

    if logits.dim() != 2 or x.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            f"logits must be [tokens, experts] for x [tokens, hidden], got {tuple(logits.shape)} "
            f"and {tuple(x.shape)}"
        )
    route = top_k_route(logits, top_k, x.dtype)
    r = route.routing
    y = swiglu_experts(x, w_in, w_out, r.sorted_pair, r.expert_offsets, linear_fn)
    return combine(y, route.gates) + bias, route


def moe_layer(
    x: torch.Tensor,
    logits: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    bias: torch.Tensor,
    top_k: int,
) -> tuple[torch.Tensor, TopKRouting]:
    """The JetMoE MoE MLP after the router matmul, for ``x`` ``[T, D]`` and router ``logits``
    ``[T, E]``: top-k routing (``jetmoe_model.routing.top_k_route``: softmax over the top-k
    logits, gates in x's dtype), the SwiGLU expert MLP, the gate-weighted combine of each
    token's k outputs, plus ``bias``. Returns ``(out [T, D], TopKRouting)``."""
    return moe_layer_with(x, logits, w_in, w_out, bias, top_k, linear.expert_linear)


__all__ = ["check_mlp_args", "combine", "expert_mlp", "moe_layer", "swiglu_experts"]
