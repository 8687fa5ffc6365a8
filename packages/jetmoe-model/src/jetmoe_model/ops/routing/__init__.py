"""Top-k routing + the expert sort as one op (semantics: ``jetmoe_model.routing.top_k_route``).

    route = top_k_route(logits, top_k, gate_dtype, backend=None)

Registered as ``jetmoe_model::top_k_route`` (``tensor_utils.ops``). The ``triton`` backend runs
``triton.py`` (1-2 launches instead of ~10 PyTorch ops, gates differentiable) and also returns
``Routing.pair_position`` (the sorted row of each pair); ``reference`` (alias ``loop``) runs the
PyTorch spec. The expert backends without a routing of their own (``grouped_mm``) route with
the reference.
"""

from __future__ import annotations

from tensor_utils.ops import Backend, Op

from . import naive

top_k_route = Op(
    "jetmoe_model::top_k_route",
    reference=naive.top_k_route,
    backends=[
        Backend(
            "triton",
            "jetmoe_model.ops.routing.triton:top_k_route",
            aot="jetmoe_model.ops.routing.triton:aot_launches",
        )
    ],
    aliases={"loop": "reference", "grouped_mm": "reference"},
    cases="jetmoe_model.ops.routing.cases:cases",
    check="jetmoe_model.ops.routing.cases:same_routing",
    # Not a torch.library custom op: the result is a TopKRouting (named tuples holding ints and
    # an optional tensor), which a schema cannot return. torch.compile traces the dispatch.
    library=False,
)

__all__ = ["naive", "top_k_route"]
