"""The SwiGLU expert MLP, and the whole MoE layer after the router matmul.

    y = expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets, backend=None)
    out, route = moe_layer(x, logits, w_in, w_out, bias, top_k, backend=None)

Registered as ``jetmoe_model::expert_mlp`` and ``jetmoe_model::moe_layer``
(``tensor_utils.ops``); semantics in ``naive.py``. Backends as for ``expert_linear``
(``jetmoe_model.ops.experts``): ``reference``/``loop`` and ``grouped_mm`` compose expert
linears with the activation (and, for the layer, the routing and combine) in PyTorch; ``triton``
runs the fused kernels: SwiGLU in the GEMM epilogues, and for the layer one autograd node with
the routing kernels inside and the routing's backward folded into the combine's backward.
"""

from __future__ import annotations

import torch

from tensor_utils.ops import Backend, Op

from . import naive

_TRITON = "jetmoe_model.ops.expert_mlp.triton"
_CASES = "jetmoe_model.ops.expert_mlp.cases"


def _fake_mlp(
    x: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
) -> torch.Tensor:
    """Output of the right shape for the compiler (the reference loop reads offsets on the host)."""
    naive.check_mlp_args(x, w_in, w_out, sorted_pair, expert_offsets)
    return x.new_empty(sorted_pair.shape[0], w_out.shape[1])


def _grouped_mm(name: str) -> Backend:
    return Backend(
        "grouped_mm",
        f"jetmoe_model.ops.expert_mlp.grouped_mm:{name}",
        device_types=("cuda", "cpu"),
        requires=(),
        interpretable=False,
        auto=False,  # 16-byte aligned rows only: runs when asked for
    )


expert_mlp = Op(
    "jetmoe_model::expert_mlp",
    reference=naive.expert_mlp,
    backends=[
        Backend("triton", f"{_TRITON}:swiglu_mlp", aot=f"{_TRITON}:aot_launches"),
        _grouped_mm("expert_mlp"),
    ],
    aliases={"loop": "reference"},
    cases=f"{_CASES}:mlp_cases",
    check=f"{_CASES}:fp16_slack",
    fake=_fake_mlp,
)

moe_layer = Op(
    "jetmoe_model::moe_layer",
    reference=naive.moe_layer,
    backends=[
        Backend("triton", f"{_TRITON}:routed_swiglu_moe", aot=f"{_TRITON}:aot_launches"),
        _grouped_mm("moe_layer"),
    ],
    aliases={"loop": "reference"},
    cases=f"{_CASES}:layer_cases",
    check=f"{_CASES}:same_layer_output",
    # Not a torch.library custom op: the result holds a TopKRouting (named tuples with ints and
    # an optional tensor), which a schema cannot return. torch.compile traces the dispatch.
    library=False,
)

__all__ = ["expert_mlp", "moe_layer", "naive"]
