"""The MoE layer's earlier Triton path, kept only to be measured (and tested) against the fused
``jetmoe_model::moe_layer``: the Triton routing as its own autograd node (``ops/routing``), then
the fused SwiGLU experts + combine + bias as a second node (``swiglu_moe``), whose backward
returns ``dgates`` for the routing node's backward kernel.

    from unfused_moe import use_route_node
    use_route_node(layer, True)    # this JetMoEMoE layer now runs the two-node path on Triton
    use_route_node(layer, False)   # back to the fused layer op
"""

from __future__ import annotations

import types

import torch
from jetmoe_model.ops.expert_mlp import triton as mlp
from jetmoe_model.ops.experts import expert_linear
from jetmoe_model.ops.experts.naive import check_args
from jetmoe_model.ops.options import kernel_options


def swiglu_moe(x, w_in, w_out, gates, bias, routing):
    """MoE layer output ``[T, D]`` after routing (``routing.pair_position`` from the Triton
    routing): fused SwiGLU experts + gate-weighted combine + bias, forward and backward.
    Without autograd: the same kernels, no ``h``, no autograd node."""
    k = check_args(x, w_in, routing.sorted_pair, routing.expert_offsets, "token", "sorted")
    args = (routing.sorted_pair, routing.expert_offsets)
    pos = routing.pair_position
    if pos is None:  # a routing from the PyTorch spec: invert the sort here
        pos = torch.empty_like(routing.sorted_pair, dtype=torch.int32)
        pos[routing.sorted_pair] = torch.arange(pos.numel(), device=pos.device, dtype=pos.dtype)
    if mlp._needs_grad(x, w_in, w_out, gates, bias):
        return mlp._SwiGLUMoE.apply(x, w_in, w_out, gates, bias, None, None, *args, pos, k)
    opts = kernel_options()
    x_s = mlp._sorted_x(x, routing.sorted_pair, k, opts)
    return mlp._moe_forward(x, x_s, w_in, w_out, gates.contiguous(), bias, *args, k, False, opts)[3]


def _route_node_forward(layer, x):
    flat = x.reshape(-1, x.shape[-1])
    backend = layer.input_linear.config.expert_backend
    if not layer.swiglu or expert_linear.select(flat.device.type, flat.dtype, backend) != "triton":
        return type(layer).forward(layer, x)
    route = layer.router(flat, "triton")
    w_in, w_out = layer.input_linear.weight, layer.output_linear.weight
    out = swiglu_moe(flat, w_in, w_out, route.gates, layer.bias, route.routing)
    return out.view(x.shape), route


def use_route_node(layer, on: bool) -> None:
    """Switch one ``JetMoEMoE`` layer to the two-node path on the Triton backend (or back)."""
    if on:
        layer.forward = types.MethodType(_route_node_forward, layer)
    else:
        layer.__dict__.pop("forward", None)
