"""``torch.compile(fullgraph=True)`` over each package's main op, on the CPU, equals eager.

Ops registered as ``torch.library`` custom ops must reach the compiler as that one node (the
graph is checked for it); the two jetmoe ops registered with ``library=False`` (a routing result
a schema cannot express) are traced through their Python dispatch to the reference. Backend ``eager`` keeps
this quick: the point is the capture (no graph break), not code generation.
"""

from __future__ import annotations

import pytest
import torch
from expo_merge.ops import extrapolate
from galore_optim.ops import projected_adam_step, quantize_blockwise
from jetmoe_model.ops.expert_mlp import expert_mlp, moe_layer
from jetmoe_model.ops.experts import expert_linear
from jetmoe_model.ops.experts.cases import random_expert_index
from jetmoe_model.ops.routing import top_k_route
from jetmoe_model.routing import sort_by_expert
from kvprune.ops.ragged_decode import ragged_decode_attention
from kvprune.ops.ragged_decode.cases import random_ragged_case


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled(fn):
    """``fn`` compiled with fullgraph=True, and the FX graphs the compiler produced."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return torch.compile(fn, fullgraph=True, backend=backend), graphs


def assert_custom_op_in(graphs, op):
    code = "\n".join(gm.code for gm in graphs)
    assert op.library_op is not None
    assert f"{op.namespace}.{op.short_name}" in code, f"{op.name} is not one node in:\n{code}"


def _routing(tokens=7, experts=4, top_k=2, seed=0):
    return sort_by_expert(random_expert_index(tokens, experts, top_k, seed), experts)


def test_expo_extrapolate_and_its_out_form():
    sft, aligned = torch.randn(5, 7), torch.randn(5, 7)

    def f(sft, aligned):
        return extrapolate(sft, aligned, 0.7, out_dtype=torch.float16) * 2

    fc, graphs = compiled(f)
    assert torch.equal(fc(sft, aligned), f(sft, aligned))
    assert_custom_op_in(graphs, extrapolate)

    def g(sft, aligned, out):
        extrapolate(sft, aligned, -0.3, out=out)
        return out + 1

    gc, _ = compiled(g)
    out_c, out_e = torch.empty(5, 7, dtype=torch.bfloat16), torch.empty(5, 7, dtype=torch.bfloat16)
    assert torch.equal(gc(sft, aligned, out_c), g(sft, aligned, out_e))
    assert torch.equal(out_c, out_e)  # written in place under the compiler too


def test_galore_projected_adam_step_mutates_in_place():
    def make():
        gen = torch.Generator().manual_seed(0)
        w, g = torch.randn(6, 5, generator=gen), torch.randn(6, 3, generator=gen)
        right = torch.linalg.qr(torch.randn(5, 3, generator=gen)).Q.T.contiguous()
        return w, g, torch.zeros(6, 3), torch.zeros(6, 3), right

    def f(w, g, m, v, right):
        projected_adam_step(w, g, m, v, None, right, "right", 0.9, 0.999, 1e-8, 1e-2, 0.25, 1e-3)
        return w.sum() + m.sum()

    fc, graphs = compiled(f)
    eager, comp = make(), make()
    assert torch.equal(fc(*comp), f(*eager))
    for a, b in zip(comp, eager, strict=True):
        assert torch.equal(a, b)
    assert_custom_op_in(graphs, projected_adam_step)

    fq, graphs = compiled(lambda x: quantize_blockwise(x, "unsigned")[1] * 2)
    x = torch.rand(300)
    assert torch.equal(fq(x), quantize_blockwise(x, "unsigned")[1] * 2)
    assert_custom_op_in(graphs, quantize_blockwise)


def test_kvprune_ragged_decode_with_and_without_weights():
    q, k, v, offsets, lengths = random_ragged_case(0, [5, 0, 9], [2, 0, 1], 2, 8, torch.float32)
    scale = 8**-0.5

    def f(q, k, v, offsets, lengths):
        out, weights = ragged_decode_attention(q, k, v, offsets, lengths, scale, max_len=9)
        return out * 2, weights.sum(-1)

    fc, graphs = compiled(f)
    for a, b in zip(fc(q, k, v, offsets, lengths), f(q, k, v, offsets, lengths), strict=True):
        torch.testing.assert_close(a, b)
    assert_custom_op_in(graphs, ragged_decode_attention)

    def g(q, k, v, offsets, lengths):
        out, weights = ragged_decode_attention(q, k, v, offsets, lengths, scale, need_weights=False)
        assert weights is None
        return out + 1

    gc, _ = compiled(g)
    torch.testing.assert_close(gc(q, k, v, offsets, lengths), g(q, k, v, offsets, lengths))


def test_jetmoe_expert_ops_are_one_node_each():
    r = _routing()
    x, w = torch.randn(7, 8), torch.randn(4, 16, 8)

    def f(x, w):
        y = expert_linear(x, w, r.sorted_pair, r.expert_offsets, output_order="sorted")
        return y.relu()

    fc, graphs = compiled(f)
    assert torch.equal(fc(x, w), f(x, w))
    assert_custom_op_in(graphs, expert_linear)

    w_in, w_out = torch.randn(4, 24, 8), torch.randn(4, 8, 12)
    fm, graphs = compiled(lambda x: expert_mlp(x, w_in, w_out, r.sorted_pair, r.expert_offsets))
    assert torch.equal(fm(x), expert_mlp(x, w_in, w_out, r.sorted_pair, r.expert_offsets))
    assert_custom_op_in(graphs, expert_mlp)


def test_jetmoe_routing_traces_through_the_dispatch():
    logits = torch.randn(9, 4)

    def f(logits):
        route = top_k_route(logits, 2, torch.float32)
        return route.gates * 2, route.expert_index

    fc, _ = compiled(f)
    for a, b in zip(fc(logits), f(logits), strict=True):
        assert torch.equal(a, b)
    assert top_k_route.library_op is None and moe_layer.library_op is None
