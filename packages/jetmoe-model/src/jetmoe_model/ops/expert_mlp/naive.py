"""Reference SwiGLU expert MLP (the spec of every backend), from the reference expert linear.

``expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets)`` computes, for every (token, choice)
pair ``p = t * k + j`` routed to expert ``e(p)``::

    g, u = split(x[t] @ w_in[e(p)].T)        w_in: [E, 2 * F, D], gate rows first (released)
    y[p] = (silu(g) * u) @ w_out[e(p)].T     w_out: [E, D, F]

Output ``[T * k, D]`` in pair order (the gate-weighted combine and bias stay with the layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets, *, linear_fn=None) -> torch.Tensor:
    """``linear_fn`` (default: the reference loop) runs the two expert matmuls."""
    check_mlp_args(x, w_in, w_out, sorted_pair, expert_offsets)
    fn = linear_fn or linear.expert_linear
    h = fn(x, w_in, sorted_pair, expert_offsets, input_order="token", output_order="sorted")
    gate, up = h.chunk(2, dim=-1)
    act = F.silu(gate) * up
    return fn(act, w_out, sorted_pair, expert_offsets, input_order="sorted", output_order="pair")


__all__ = ["check_mlp_args", "expert_mlp"]
